"""The Triton kernels' tests run compiled on a CUDA machine and under Triton's interpreter on CPU
tensors everywhere else.

``triton.jit`` reads ``TRITON_INTERPRET`` when a kernel is defined, i.e. when its module is
imported (``kernels.triton.runtime.INTERPRETED`` records it then), and Triton reads it again while
interpreting (modules it imports lazily check it). So where there is no GPU this file sets it
before any test module imports the kernels, and leaves it set for the process. The rest of the
suite is indifferent to it: on the CPU nothing else imports Triton (``--kernel-backend auto``
resolves to ``torch`` there), and the servers other tests start inherit it to the same effect."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture
def device() -> str:
    """Where the kernels run in this process: CPU tensors when interpreted, else CUDA."""
    from grokd.kernels.triton import runtime

    return "cpu" if runtime.INTERPRETED else "cuda"
