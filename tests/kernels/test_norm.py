"""The C RMSNorm against its twin, the PyTorch reference (HF's order of roundings)."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels import cpu_build, norm
from grokd.kernels.dispatch import select_kernels


@pytest.mark.parametrize("rows", [1, 3, 16, 300])  # 16 and up run on two threads
def test_bf16_rows_are_bit_identical(rows):
    g = torch.Generator().manual_seed(rows)
    x = (torch.randn(rows, 576, generator=g) * 4).bfloat16()
    w = (torch.rand(576, generator=g) + 0.5).bfloat16()
    got = norm.rms_norm_cpu(x, w, 1e-5)
    assert got.dtype == torch.bfloat16 and got.shape == x.shape
    assert torch.equal(got, norm.rms_norm(x, w, 1e-5))


def test_float32_and_strided_rows_match_closely():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(4, 2, 96, generator=g)[:, 0]  # every other row of a larger tensor
    w = torch.rand(96, generator=g) + 0.5
    assert not x.is_contiguous()
    torch.testing.assert_close(norm.rms_norm_cpu(x, w, 1e-6), norm.rms_norm(x, w, 1e-6), atol=1e-6, rtol=1e-6)


def test_other_inputs_take_the_reference_path():
    w = torch.ones(64)
    batched = torch.randn(2, 3, 64)  # not 2-D
    half = torch.randn(2, 64).half()
    strided = torch.randn(2, 128)[:, ::2]  # elements of stride 2
    for x in (batched, strided):
        torch.testing.assert_close(norm.rms_norm_cpu(x, w, 1e-5), norm.rms_norm(x, w, 1e-5))
    torch.testing.assert_close(norm.rms_norm_cpu(half, w.half(), 1e-5), norm.rms_norm(half, w.half(), 1e-5))


def test_cpu_dispatch_uses_it():
    """The C kernel where the CPU tier has C kernels, the PyTorch twin elsewhere (generic, aarch64)."""
    expected = norm.rms_norm_cpu if cpu_build.available() else norm.rms_norm
    assert select_kernels("cpu").rms_norm is expected
