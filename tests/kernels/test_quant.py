"""The grouped int8 layout's ``linear`` must use exactly bf16(int8 * scale) as its weight, including 8-block scales."""

import pytest
import torch

from grokd.kernels.quant import GroupedInt8Weight, quantize_grouped_int8


def _naive_weight(w8: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    k, g = w8.shape[0], scales.shape[0]
    out = torch.empty(w8.shape, dtype=torch.bfloat16)
    for r in range(k):
        out[r] = (w8[r].to(torch.bfloat16) * scales[r // (k // g)]).to(torch.bfloat16)
    return out


def test_grouped_int8_linear_matches_naive_dequant_per_block_scales():
    torch.manual_seed(0)
    for groups in (1, 8):
        w8 = torch.randint(-127, 128, (64, 24), dtype=torch.int8)
        scales = (torch.rand(groups, 24) * 0.01 + 1e-3).to(torch.bfloat16)
        x = torch.randn(5, 64)
        ref = x @ _naive_weight(w8, scales).float()
        assert torch.equal(GroupedInt8Weight(w8, scales).dequantize(), _naive_weight(w8, scales))
        torch.testing.assert_close(GroupedInt8Weight(w8, scales).linear(x), ref, rtol=0, atol=1e-5)
        assert GroupedInt8Weight(w8, scales).linear(x.bfloat16()).dtype == torch.bfloat16


def test_dequantize_stacked_and_quantize_roundtrip():
    torch.manual_seed(1)
    w8 = torch.randint(-127, 128, (3, 16, 8), dtype=torch.int8)
    scales = torch.rand(3, 8, 8).to(torch.bfloat16)
    full = GroupedInt8Weight(w8, scales).dequantize()
    for e in range(3):
        assert torch.equal(full[e], _naive_weight(w8[e], scales[e]))
    w = torch.randn(32, 8)
    q = quantize_grouped_int8(w, groups=2)
    assert q.qweight.dtype == torch.int8 and q.qweight.shape == (32, 8) and q.scales.shape == (2, 8)
    assert q.scales.dtype == torch.bfloat16 and q.nbytes() == 32 * 8 + 2 * 8 * 2
    assert (q.dequantize().float() - w).abs().max() < 0.05


def test_grouped_fp8_layout_rounding_and_range():
    from grokd.kernels.quant import FP8, FP8_MAX, quantize_grouped_fp8

    torch.manual_seed(2)
    w = torch.randn(64, 24) * torch.logspace(-3, 1, 24)  # columns of very different sizes
    q = quantize_grouped_fp8(w, groups=8)
    assert q.qweight.dtype == FP8 and q.qweight.shape == (64, 24) and q.scales.shape == (8, 24)
    assert q.scales.dtype == torch.bfloat16 and q.nbytes() == 64 * 24 + 8 * 24 * 2  # int8's byte count
    values = q.qweight.float()
    assert torch.isfinite(values).all() and values.abs().max() <= FP8_MAX
    # each block column uses the format's range: its largest value lands near 448
    block_max = values.view(8, 8, 24).abs().amax(dim=1)
    assert (block_max > 400).all()
    # e4m3 keeps 3 mantissa bits: every weight within 1/16 of itself (plus the subnormal step)
    eff = q.dequantize().float()
    step = q.scales.float().repeat_interleave(8, dim=0) * 2.0**-9
    assert ((eff - w).abs() <= w.abs() / 16 + step + w.abs() * 2.0**-8).all()
    rel = ((eff - w).norm() / w.norm()).item()
    assert 0.01 < rel < 0.04, rel  # lossier than int8's per-channel grid on Gaussian weights
    assert ((quantize_grouped_int8(w, 8).dequantize().float() - w).norm() / w.norm()).item() < rel
    # the GEMM runs on the same layout, dequantising the e4m3 values as it does int8 ones
    x = torch.randn(3, 64)
    torch.testing.assert_close(q.linear(x), x @ eff, rtol=0, atol=1e-4)


def test_grouped_fp8_saturates_instead_of_nan():
    """A scale rounded down to bf16 puts the largest value just past 448 (449.3 here); it must land
    on 448, e4m3fn's largest finite value (the format has no infinity, only NaN), and an all-zero
    column must give zeros."""
    from grokd.kernels.quant import FP8_MAX, quantize_grouped_fp8

    w = torch.tensor([[1.0 + 2.0**-7], [0.5], [-0.25]]).repeat(1, 4)  # 1.0078: its scale rounds down in bf16
    w[:, 3] = 0
    q = quantize_grouped_fp8(w)
    assert (w[0, 0] / q.scales[0, 0].float()).item() > FP8_MAX
    assert torch.isfinite(q.qweight.float()).all() and q.qweight.float()[0, :3].eq(FP8_MAX).all()
    assert q.dequantize()[:, 3].eq(0).all()
    with pytest.raises(ValueError, match="not a multiple of 2 groups"):
        quantize_grouped_fp8(torch.randn(3, 4), groups=2)
