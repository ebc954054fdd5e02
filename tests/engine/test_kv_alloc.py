"""The KV pool is allocated zero-filled without touching every page (fast start-up)."""

from __future__ import annotations

import pytest
import torch

from grokd.engine.model_runner import zeros_lazy
from tests.kernels.test_host_memory import resident_bytes, vm_flags


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_zeros_lazy_is_a_writable_zero_tensor(dtype) -> None:
    shape = (2, 5, 16, 3, 8)
    t = zeros_lazy(shape, dtype, torch.device("cpu"))
    assert t.shape == shape and t.dtype == dtype and t.is_contiguous()
    assert torch.equal(t, torch.zeros(shape, dtype=dtype))
    t[1, 2, 3] = 1.5
    assert float(t.sum()) == 1.5 * 3 * 8
    assert zeros_lazy((0, 4), dtype, torch.device("cpu")).shape == (0, 4)


def test_a_large_pool_is_lazy_private_memory_in_ordinary_pages() -> None:
    """A pool over a huge page is not advised into huge pages (a fault while serving could stall to
    compact memory), and untouched it is not resident: only the pages written count."""
    t = zeros_lazy((64, 1024, 1024), torch.int8, torch.device("cpu"))  # 64 MiB
    assert "hg" not in vm_flags(t)
    t[7, 0, 0] = 1
    assert resident_bytes(t) <= 2 << 20  # 64 MiB mapped, a page (a huge one at most) resident


def test_a_resident_pool_holds_every_page_from_the_start() -> None:
    """``resident=True`` (how the runner makes its pool) faults every page in at allocation, so the
    memory a server reports reserved is the memory it holds from start-up."""
    t = zeros_lazy((16, 1024, 1024), torch.int8, torch.device("cpu"), resident=True)  # 16 MiB
    assert resident_bytes(t) == 16 << 20
    assert not t.any()
