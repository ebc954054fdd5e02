"""The int8 weight-only GEMM against its PyTorch twins (``GroupedInt8Weight.linear``,
``Int8Weight.linear``), and its dequantised tiles against ``GroupedInt8Weight.dequantize``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grokd.kernels import linear as _linear
from grokd.kernels.quant import GroupedInt8Weight
from grokd.kernels.triton import int8_linear
from tests.kernels.triton.compare import assert_relative_close


def _weight(k: int, n: int, groups: int, device: str, seed: int = 0) -> GroupedInt8Weight:
    g = torch.Generator().manual_seed(seed)
    q = torch.randint(-127, 128, (k, n), dtype=torch.int8, generator=g)
    s = (torch.rand(groups, n, generator=g) * 0.02 + 1e-3).to(torch.bfloat16)
    return GroupedInt8Weight(q.to(device), s.to(device))


# 344 = the golden fixture's expert width: 8 groups of 43 rows, not a multiple of any tile
@pytest.mark.parametrize(("k", "n", "groups"), [(64, 48, 1), (344, 40, 8), (48, 344, 8), (256, 40, 2)])
def test_dequantised_tiles_are_bit_equal(device, k, n, groups):
    w = _weight(k, n, groups, device)
    assert torch.equal(int8_linear.dequantize(w).cpu(), w.dequantize().float().cpu())


@pytest.mark.parametrize("groups", [1, 8])
@pytest.mark.parametrize("rows", [1, 19])
def test_grouped_int8_matches_twin(device, groups, rows):
    w = _weight(344, 40, groups, device)
    x = torch.randn(rows, 344, generator=torch.Generator().manual_seed(rows)).to(device)
    assert_relative_close(int8_linear.linear(x, w), w.linear(x))
    xb = x.bfloat16()
    got, want = int8_linear.linear(xb, w), w.linear(xb)
    assert got.dtype == torch.bfloat16
    # float32 sums in another order, then one bf16 rounding each: an ulp of bf16 at most
    assert_relative_close(got, want, 8e-3)


def test_one_scale_row_per_tile(device):
    """Groups of 128 rows (a multiple of the tile): one scale row per tile, broadcast."""
    for groups in (1, 2):
        w = _weight(256, 40, groups, device, seed=groups)
        x = torch.randn(3, 256).to(device)
        assert_relative_close(int8_linear.linear(x, w), w.linear(x))
        assert torch.equal(int8_linear.linear(x.bfloat16(), w), w.linear(x.bfloat16()))


def test_leading_dims_and_plain_weights(device):
    w = _weight(64, 32, 1, device)
    x = torch.randn(2, 3, 64).to(device)
    assert_relative_close(int8_linear.linear(x, w), w.linear(x))
    plain = torch.randn(32, 64).to(device)  # a plain tensor takes the PyTorch op
    torch.testing.assert_close(int8_linear.linear(x, plain), F.linear(x, plain))


def test_per_channel_int8_matches_twin(device):
    w = _linear.quantize_per_channel_int8(torch.randn(40, 48), torch.float32)
    w = _linear.Int8Weight(w.qweight.to(device), w.scales.to(device))
    x = torch.randn(3, 48).to(device)
    want = F.linear(x, w.qweight.float()) * w.scales  # the twin's GPU path
    assert_relative_close(int8_linear.linear(x, w), want)


@pytest.mark.parametrize("groups", [1, 8])
def test_fp8_values_in_the_grouped_layout(device, groups):
    """e4m3 values (``--weights-dtype fp8``) through the same kernel: tiles bit-equal, GEMM as the twin."""
    from grokd.kernels.quant import FP8, quantize_grouped_fp8

    dense = torch.randn(344, 40, generator=torch.Generator().manual_seed(groups)) * 0.05
    q = quantize_grouped_fp8(dense, groups)
    w = GroupedInt8Weight(q.qweight.to(device), q.scales.to(device))
    assert w.qweight.dtype == FP8
    assert torch.equal(int8_linear.dequantize(w).cpu(), w.dequantize().float().cpu())
    x = torch.randn(5, 344, generator=torch.Generator().manual_seed(7)).to(device)
    assert_relative_close(int8_linear.linear(x, w), w.linear(x))
