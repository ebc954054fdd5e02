"""Huge-page host memory: zeroed, writable tensors in mappings advised into transparent huge pages."""

from __future__ import annotations

import ctypes
import mmap
from pathlib import Path

import torch

from grokd.kernels import cpu_linear, host_memory

# a kernel built without transparent huge pages refuses the advice: the memory is then plain pages
THP = Path("/sys/kernel/mm/transparent_hugepage/enabled").exists()


def smaps_entry(tensor: torch.Tensor) -> dict[str, str]:
    """The ``/proc/self/smaps`` fields of the mapping that holds ``tensor``'s first byte."""
    address, entry, inside = tensor.data_ptr(), None, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head, _, rest = line.partition(" ")
            if "-" in head and not head.endswith(":"):  # a mapping's first line: its address range
                if inside:
                    break
                start, end = (int(x, 16) for x in head.split("-"))
                inside, entry = start <= address < end, {}
            elif inside:
                entry[head.rstrip(":")] = rest.strip()
    assert inside and entry is not None, "no mapping holds the tensor"
    return entry


def resident_bytes(tensor: torch.Tensor) -> int:
    """Bytes of the pages under ``tensor`` that are in RAM (``mincore``): exact for its range, where
    a mapping's ``Rss`` in smaps also counts neighbours the kernel merged into it."""
    page = mmap.PAGESIZE
    start = tensor.data_ptr() // page * page
    length = tensor.data_ptr() + tensor.numel() * tensor.element_size() - start
    vec = (ctypes.c_ubyte * -(-length // page))()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    assert libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(length), vec) == 0, ctypes.get_errno()
    return sum(b & 1 for b in vec) * page


def vm_flags(tensor: torch.Tensor) -> list[str]:
    """The mapping's ``VmFlags`` (``hg``: advised into huge pages)."""
    return smaps_entry(tensor)["VmFlags"].split()


def advised(tensor: torch.Tensor) -> bool:
    """Whether ``tensor``'s mapping asked for huge pages (where the kernel has them at all)."""
    return ("hg" in vm_flags(tensor)) == THP


def test_zeros_are_zero_writable_and_advised_into_huge_pages():
    shape = (3, 1024, 1024)  # 12 MiB of float32
    t = host_memory.zeros(shape, torch.float32)
    assert t.shape == shape and t.dtype == torch.float32 and t.is_contiguous()
    assert not t.any()
    t[1, 2, 3] = 7.0
    assert t.sum().item() == 7.0
    assert advised(t)


def test_small_and_empty_tensors_are_plain_memory():
    small = host_memory.zeros((10, 3), torch.bfloat16)
    assert small.shape == (10, 3) and not small.any()
    assert "hg" not in vm_flags(small)  # under one huge page: not advised
    assert host_memory.zeros((0, 5), torch.int8).shape == (0, 5)


def test_copy_keeps_values_of_a_non_contiguous_tensor():
    source = torch.randn(64, 2048, 8).permute(2, 0, 1)  # 4 MiB, strided
    out = host_memory.copy(source)
    assert out.is_contiguous() and torch.equal(out, source)
    assert advised(out)


def test_arena_packs_small_tensors_together_and_large_ones_apart():
    arena = host_memory.Arena(chunk_bytes=4 << 20)
    a, b = torch.randn(1000, 3), torch.randn(17).bfloat16()
    ca, cb = arena.copy(a), arena.copy(b)
    assert torch.equal(ca, a) and torch.equal(cb, b) and cb.dtype == torch.bfloat16
    assert cb.data_ptr() - ca.data_ptr() == 12_032  # 12,000 bytes, then the next cache line
    assert advised(ca)
    big = torch.randn(2 << 20)  # 8 MiB: over a quarter of the chunk, its own mapping
    assert torch.equal(arena.copy(big), big)
    for _ in range(3):  # filling a chunk opens the next; earlier tensors keep theirs alive
        arena.copy(torch.ones(256 << 10))
    assert torch.equal(ca, a) and torch.equal(cb, b)


def test_packed_projection_weights_live_in_huge_pages():
    weight = torch.randn(2048, 1024).bfloat16()  # 4 MiB
    packed = cpu_linear.pack(weight, host_memory.Arena())
    assert torch.equal(packed.unpack(), weight)
    assert advised(packed.packed)
