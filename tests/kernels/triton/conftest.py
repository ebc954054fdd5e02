"""The Triton kernels' tests run compiled on a CUDA machine and under Triton's interpreter on CPU
tensors everywhere else.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, i.e. when its module is
imported (``kernels.triton.runtime.INTERPRETED`` records it then), and Triton reads it again while
interpreting (modules it imports lazily check it). So where there is no GPU the top-level
tests/conftest.py sets it before any test module is collected (tests/benchmarks imports the GPU
benchmark, and with it the kernels, before this directory is reached), and leaves it set for the
process. The rest of the suite is indifferent to it: on the CPU nothing else runs Triton
(``--kernel-backend auto`` resolves to ``torch`` there), and the servers other tests start
inherit it to the same effect."""

from __future__ import annotations

import pytest


@pytest.fixture
def device() -> str:
    """Where the kernels run in this process: CPU tensors when interpreted, else CUDA."""
    from grokd.kernels.triton import runtime

    return "cpu" if runtime.INTERPRETED else "cuda"
