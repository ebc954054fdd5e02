"""Packed (oneDNN blocked) weights must give exactly ``F.linear``'s products, the reference; weight-only
int8 must match its dequantising twin."""

import pytest
import torch
import torch.nn.functional as F

from grokd.kernels.linear import (
    OneDNNWeight,
    PackedWeight,
    can_pack,
    linear,
    pack_onednn,
    per_channel_int8_reference,
)

needs_onednn = pytest.mark.skipif(not can_pack(torch.zeros(2, 2, dtype=torch.bfloat16)),
                                  reason="oneDNN has no bf16 GEMM on this CPU tier (below avx512) or torch has no oneDNN")


@needs_onednn
@pytest.mark.parametrize("rows", [0, 1, 5, 33, 130])
def test_packed_bf16_weight_is_bit_identical_to_f_linear(rows: int) -> None:
    torch.manual_seed(rows)
    w = torch.randn(96, 80).to(torch.bfloat16)
    packed = pack_onednn(w)
    assert isinstance(packed, OneDNNWeight) and isinstance(packed, PackedWeight)
    assert packed.packed.is_mkldnn and tuple(packed.shape) == (96, 80)
    x = torch.randn(rows, 80).to(torch.bfloat16)
    got = linear(x, packed)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 96)
    assert torch.equal(got, F.linear(x, w))


@needs_onednn
def test_non_contiguous_and_mixed_dtype_inputs() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 48).to(torch.bfloat16)
    packed = pack_onednn(w)
    x = torch.randn(7, 100).to(torch.bfloat16)[:, 10:58]  # a strided slice, as qkv splits give
    assert torch.equal(linear(x, packed), F.linear(x.contiguous(), w))
    xf = torch.randn(3, 48)  # float32 activations over bf16 storage: cast in and back out
    out = linear(xf, packed)
    assert out.dtype == torch.float32
    assert torch.equal(out, F.linear(xf.to(torch.bfloat16), w).float())


def test_weights_that_cannot_be_packed_pass_through_unchanged() -> None:
    w32 = torch.randn(8, 4)
    assert not can_pack(w32) and pack_onednn(w32) is w32  # float32 stays dense
    assert pack_onednn(torch.randn(2, 3, 4).to(torch.bfloat16)).dim() == 3  # not a matrix
    x = torch.randn(2, 4)
    assert torch.equal(linear(x, w32), F.linear(x, w32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weight_only_matches_its_reference_and_the_float_weight(dtype: torch.dtype, device: str) -> None:
    from grokd.kernels.linear import quantize_per_channel_int8

    torch.manual_seed(3)
    w = torch.randn(64, 96) * torch.linspace(0.01, 2.0, 64)[:, None]  # rows of very different scale
    w = w.to(device)
    q = quantize_per_channel_int8(w, dtype)
    assert q.qweight.dtype == torch.int8 and q.scales.dtype == dtype and q.shape == (64, 96)
    assert q.nbytes() == 64 * 96 + 64 * q.scales.element_size()
    assert int(q.qweight.abs().max()) == 127  # each row's largest value uses the full range
    x = torch.randn(9, 96).to(dtype).to(device)
    got = linear(x, q)
    assert got.dtype == dtype and got.shape == (9, 64)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got.float(), per_channel_int8_reference(x, q).float(), atol=tol, rtol=tol)
    # and it is close to the unquantised product: relative error of per-row int8 ~ 1/254
    exact = F.linear(x.float(), w)
    assert ((got.float() - exact).norm() / exact.norm()).item() < 0.02
    assert linear(x[:0], q).shape == (0, 64)


def test_int8_inputs_torchs_kernel_gets_wrong_take_the_dequantising_path() -> None:
    """torch 2.13's ``_weight_int8pack_mm`` returns NaN (or crashes) when the input features are
    not a multiple of 16; the unpacked ``Int8Weight`` path must not call it then."""
    from grokd.kernels.linear import quantize_per_channel_int8

    for in_features in (8, 24, 100):
        g = torch.Generator().manual_seed(in_features)
        q = quantize_per_channel_int8(torch.randn(64, in_features, generator=g), torch.bfloat16)
        x = torch.randn(3, in_features, generator=g).bfloat16()
        got = linear(x, q)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.float(), per_channel_int8_reference(x, q).float(), atol=3e-2, rtol=3e-2)


def test_every_packed_form_is_a_packed_weight_and_a_tensor_is_not() -> None:
    """``linear`` runs a weight's own ``linear`` unless it is a plain tensor; a tensor must never pass
    for a packed weight (``Tensor.matmul`` would multiply the wrong way round)."""
    from grokd.kernels import cpu_linear
    from grokd.kernels.linear import Int8Weight
    from grokd.kernels.quant import GroupedInt8Weight

    for form in (Int8Weight, OneDNNWeight, GroupedInt8Weight, cpu_linear.PanelWeight, cpu_linear.Int8PanelWeight):
        assert callable(form.linear) and callable(form.nbytes), form
    assert not isinstance(torch.zeros(2, 2), PackedWeight)
    q = GroupedInt8Weight(torch.ones(4, 3, dtype=torch.int8), torch.full((1, 3), 0.5).bfloat16())
    assert isinstance(q, PackedWeight)
    x = torch.randn(2, 4)
    assert torch.equal(linear(x, q), x @ torch.full((4, 3), 0.5))  # x @ W order, in x's dtype


def test_per_channel_quantizer_rounds_rows_as_the_kv_pool_does() -> None:
    """Weight rows and KV rows share one rounding (``quant.quantize_rows``): the same int8 values and
    float32 scales for the same rows; an all-zero row has scale 1 and multiplies to zeros."""
    from grokd.kernels.attention import quantize_kv
    from grokd.kernels.linear import quantize_per_channel_int8

    torch.manual_seed(5)
    w = torch.randn(32, 16) * 3
    w[7] = 0
    q = quantize_per_channel_int8(w, torch.float32)
    rows = quantize_kv(w)
    assert torch.equal(rows[:, :16], q.qweight)
    assert torch.equal(rows[:, 16:].contiguous().view(torch.float32)[:, 0], q.scales)
    assert q.scales[7] == 1 and not q.qweight[7].any()
    assert not linear(torch.randn(3, 16), q)[:, 7].any()


def test_weight_packer_quantizes_when_asked_and_shares_its_arena() -> None:
    from grokd.kernels.cpu_linear import Int8PanelWeight
    from grokd.kernels.linear import Int8Weight, WeightPacker, quantize_per_channel_int8

    torch.manual_seed(6)
    w = torch.randn(64, 32)
    dense = WeightPacker(dtype=torch.float32)
    assert dense(w) is w  # float32 is never packed
    int8 = WeightPacker(int8=True, dtype=torch.bfloat16)
    packed = int8(w)
    assert isinstance(packed, Int8Weight | Int8PanelWeight)
    x = torch.randn(5, 32).bfloat16()
    expected = per_channel_int8_reference(x, quantize_per_channel_int8(w, torch.bfloat16))
    torch.testing.assert_close(linear(x, packed).float(), expected.float(), atol=1e-2, rtol=8e-3)
    assert WeightPacker().arena is not WeightPacker().arena  # one arena per model, never shared
