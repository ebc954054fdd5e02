"""The grouped int8 layout's ``linear`` must use exactly bf16(int8 * scale) as its weight, including 8-block scales."""

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
