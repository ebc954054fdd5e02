"""CPU tensors in anonymous memory that Linux backs with 2 MiB transparent huge pages.

Why: a CPU decode step streams every weight once, so it lives on memory bandwidth, and with 4 KiB
pages a pass over SmolLM2's 270 MB of weights walks 66,000 page-table entries. Most distributions
ship transparent huge pages in ``madvise`` mode: only memory that asks for them gets them, and
torch's allocator never asks. Streaming reads run faster from huge pages, and so do SmolLM2's decode
steps with the packed weights in them (benchmarks/RESULTS.md#host-memory).

So the packed weights live here: an anonymous mapping with ``MADV_HUGEPAGE`` set before anything
touches it, its length rounded up to whole huge pages so that the kernel also aligns it to one
(``Arena`` packs the many small weights into shared mappings). The KV pool does not ask
(``zeros(..., huge=False)``): the gain above was the same at both contexts, so its scattered reads
gained nothing measurable, and a pool is written lazily while serving, where a huge-page fault may
stop to compact memory.

Where huge pages are disabled or unsupported the advice is refused or ignored and the memory is
ordinary 4 KiB pages: only speed differs.
"""

from __future__ import annotations

import errno
import math
import mmap

import torch

from grokd.kernels.arith import ceil_div

HUGE_PAGE = 2 << 20  # x86-64's PMD size
MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault every page in writable now, or fail with ENOMEM


def anonymous(nbytes: int, huge: bool = True) -> mmap.mmap:
    """``nbytes`` (at least 1) of zeroed anonymous memory, advised into huge pages when ``huge`` and
    it spans one."""
    if not hasattr(mmap, "MAP_PRIVATE"):  # Windows: anonymous memory by tag name, no huge pages
        return mmap.mmap(-1, nbytes)
    private = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS  # Python's default, MAP_SHARED, is shmem: no THP there
    if nbytes < HUGE_PAGE or not huge:
        return mmap.mmap(-1, nbytes, flags=private)
    buf = mmap.mmap(-1, ceil_div(nbytes, HUGE_PAGE) * HUGE_PAGE, flags=private)
    try:
        buf.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):  # no MADV_HUGEPAGE on this platform, or THP compiled out
        pass
    return buf


def populate(buf: mmap.mmap) -> None:
    """Make every page of ``buf`` resident now: ``MADV_POPULATE_WRITE``, which reports a failure
    (``OSError`` ENOMEM) instead of leaving it to a page fault later, else (an older kernel) a
    write to each page."""
    try:
        buf.madvise(MADV_POPULATE_WRITE)
        return
    except (AttributeError, ValueError):
        pass
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: the kernel predates the advice
            raise
    page = mmap.PAGESIZE
    for offset in range(0, len(buf), page):
        buf[offset] = 0


def zeros(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype, huge: bool = True,
          resident: bool = False) -> torch.Tensor:
    """A zero-filled CPU tensor in ``anonymous`` memory, which it keeps alive; ``resident``: with
    every page faulted in now (``populate``) rather than on first write."""
    count = math.prod(shape)
    if count == 0:
        return torch.zeros(shape, dtype=dtype)
    buf = anonymous(count * torch.empty((), dtype=dtype).element_size(), huge)
    if resident:
        populate(buf)
    return torch.frombuffer(buf, dtype=dtype, count=count).view(shape)


def copy(tensor: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of a CPU tensor in ``anonymous`` memory (what the decode kernels stream)."""
    out = zeros(tensor.shape, tensor.dtype)
    out.copy_(tensor)
    return out


class Arena:
    """Copies tensors one after another into shared chunks of ``anonymous`` memory. Most of a small
    model's weights are under one huge page each (SmolLM2's qkv, o and down projections: 0.7-1.8 MB),
    so one mapping apiece would leave them in 4 KiB pages; packed here they share huge pages, in the
    order the step reads them. Tensors keep their chunk alive; the arena itself can go once the
    model is packed."""

    def __init__(self, chunk_bytes: int = 64 << 20) -> None:
        self.chunk_bytes = chunk_bytes
        self._chunk: mmap.mmap | None = None
        self._used = 0

    def copy(self, tensor: torch.Tensor) -> torch.Tensor:
        nbytes = tensor.numel() * tensor.element_size()
        if nbytes == 0 or nbytes > self.chunk_bytes // 4:  # large ones get their own mapping: little waste
            return copy(tensor)
        if self._chunk is None or self._used + nbytes > self.chunk_bytes:
            self._chunk, self._used = anonymous(self.chunk_bytes), 0
        out = torch.frombuffer(self._chunk, dtype=tensor.dtype, count=tensor.numel(), offset=self._used)
        self._used += ceil_div(nbytes, 64) * 64  # the next tensor on a cache line
        return out.view(tensor.shape).copy_(tensor)
