"""The projection kernels of the CPU tier this process runs (AVX512-BF16, AVX-512 or AVX2 ones) against
their twins, ``F.linear`` on the unpacked weight and ``per_channel_int8_reference``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from grokd.kernels import cpu_linear, linear

# every x86 tier from avx2 up has both projection kernels; the generic one (aarch64) has none
needs_kernel = pytest.mark.c_kernels


def weight_and_input(rows: int, out_features: int, in_features: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = (torch.randn(out_features, in_features, generator=g) / in_features**0.5).bfloat16()
    x = torch.randn(rows, in_features, generator=g).bfloat16()
    return w, x


def test_packing_round_trips():
    w, _ = weight_and_input(1, 64, 10)
    packed = cpu_linear.pack(w)
    assert packed.packed.shape == (4, 5, 16, 2) and packed.shape == w.shape and packed.nbytes() == w.numel() * 2
    assert torch.equal(packed.unpack(), w)
    assert torch.equal(packed.packed[1, 2, 3], w[16 + 3, 4:6])  # panel 1, pair 2, column 3


@needs_kernel
@pytest.mark.parametrize("rows", [1, 3, 8, 9, 16, 33])  # whole and partial 8-row tiles
def test_matches_f_linear(rows):
    w, x = weight_and_input(rows, 96, 576, seed=rows)
    got = cpu_linear.linear_bf16(x, cpu_linear.pack(w))
    expected = F.linear(x.float(), w.float())  # exact sums: the kernel differs by its bf16 rounding
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 96)
    torch.testing.assert_close(got.float(), expected, atol=1e-2, rtol=8e-3)
    assert (got == expected.bfloat16()).float().mean() > 0.97


@needs_kernel
@pytest.mark.parametrize("rows, out_features", [(64, 128), (71, 192), (200, 64), (64, 96)])
def test_prefill_tile_matches_f_linear(rows, out_features):
    """From 64 rows on, columns in multiples of 64 take the 4-panel tile split by rows (whole and
    partial 6-row tiles, an odd split between the threads); 96 columns keep the 2-panel tile."""
    w, x = weight_and_input(rows, out_features, 576, seed=rows + out_features)
    got = cpu_linear.linear_bf16(x, cpu_linear.pack(w))
    expected = F.linear(x.float(), w.float())
    assert got.shape == (rows, out_features)
    torch.testing.assert_close(got.float(), expected, atol=1e-2, rtol=8e-3)
    assert (got == expected.bfloat16()).float().mean() > 0.97
    # the same sums in the same order as the decode tile, row by row: bit-identical to one row at a time
    assert torch.equal(got[:3], cpu_linear.linear_bf16(x[:3], cpu_linear.pack(w)))


@needs_kernel
def test_leading_dims_strided_rows_and_threads():
    w, x = weight_and_input(12, 64, 130, seed=4)
    packed = cpu_linear.pack(w)
    wide = torch.cat((x, x), dim=1)[:, :130]  # rows with stride 260
    assert not wide.is_contiguous()
    before = torch.get_num_threads()
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        try:
            results.append(cpu_linear.linear_bf16(wide.view(3, 4, 130), packed))
        finally:
            torch.set_num_threads(before)
    assert results[0].shape == (3, 4, 64) and torch.equal(results[0], results[1])
    torch.testing.assert_close(results[0].reshape(12, 64).float(), F.linear(x.float(), w.float()), atol=1e-2, rtol=8e-3)


@needs_kernel
def test_linear_and_pack_weight_choose_it():
    w, x = weight_and_input(5, 64, 32)
    packed = linear.pack_weight(w)
    assert isinstance(packed, cpu_linear.PanelWeight)
    torch.testing.assert_close(linear.linear(x, packed), cpu_linear.linear_bf16(x, packed))
    # float32 activations are cast in and back, as for the other weight forms
    assert linear.linear(x.float(), packed).dtype == torch.float32


def test_other_weights_keep_the_other_paths():
    for w in (torch.randn(64, 32),  # float32
              torch.randn(48, 32).bfloat16(),  # 48 outputs: not a multiple of 32
              torch.randn(64, 31).bfloat16()):  # odd input features
        assert not cpu_linear.supports_weight(w)
        assert not isinstance(linear.pack_weight(w), cpu_linear.PanelWeight)
    with pytest.raises(ValueError, match="bf16 CPU activations"):
        cpu_linear.linear_bf16(torch.randn(2, 32), cpu_linear.pack(torch.randn(64, 32).bfloat16()))


needs_int8_kernel = pytest.mark.c_kernels


@needs_int8_kernel
@pytest.mark.parametrize("rows", [1, 5, 8, 17])
def test_int8_matches_its_reference(rows):
    w, x = weight_and_input(rows, 64, 100, seed=rows)
    q = linear.quantize_per_channel_int8(w, torch.bfloat16)
    packed = cpu_linear.pack_int8(q.qweight, q.scales, vnni=False)  # the weight-only kernel (AVX-512 or AVX2)
    assert isinstance(packed, cpu_linear.Int8PanelWeight) and packed.nbytes() == 64 * 100 + 64 * 4
    assert torch.equal(packed.packed.transpose(1, 2).reshape(64, 100), q.qweight)
    got = linear.linear(x, packed)
    expected = linear.per_channel_int8_reference(x, q)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 64)
    torch.testing.assert_close(got.float(), expected.float(), atol=1e-2, rtol=8e-3)
    torch.testing.assert_close(got.float(), linear.linear(x, q).float(), atol=1e-2, rtol=8e-3)  # unpacked


needs_vnni_kernel = pytest.mark.skipif(not cpu_linear.supports_vnni(), reason="this CPU has no AVX512-VNNI")


@needs_vnni_kernel
@pytest.mark.parametrize("rows", [1, 4, 5, 17])
@pytest.mark.parametrize("in_features", [300, 128, 31])  # blocks of 128 with a short last one; odd: padded
def test_int8_vnni_matches_the_same_reference(rows, in_features):
    """With AVX512-VNNI the weights are packed in pairs and the activations go to int16 per block of
    128: the same twin and tolerance as the weight-only kernel (int16 is finer than bf16)."""
    w, x = weight_and_input(rows, 64, in_features, seed=rows + in_features)
    q = linear.quantize_per_channel_int8(w, torch.bfloat16)
    packed = linear.pack_weight(q)  # the default where the CPU has VNNI
    assert isinstance(packed, cpu_linear.Int8PanelWeight) and packed.vnni
    kp = in_features + in_features % 2
    assert packed.packed.dtype == torch.int8 and packed.packed.shape == (4, kp // 2, 16, 2)
    unpacked = packed.packed.permute(0, 2, 1, 3).reshape(64, kp)
    assert torch.equal(unpacked[:, :in_features], q.qweight) and not unpacked[:, in_features:].any()
    got = linear.linear(x, packed)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 64)
    torch.testing.assert_close(got.float(), linear.per_channel_int8_reference(x, q).float(), atol=1e-2, rtol=8e-3)
    fma = linear.linear(x, cpu_linear.pack_int8(q.qweight, q.scales, vnni=False))
    assert (got == fma).float().mean() > 0.9  # the two kernels' sums differ in float32 rounding only


@needs_vnni_kernel
def test_int8_vnni_zero_rows_and_blocks():
    """An all-zero block has scale 0 (no division by zero); an all-zero row gives zeros."""
    w, x = weight_and_input(3, 32, 300, seed=9)
    x[0] = 0
    x[1, 128:256] = 0
    q = linear.quantize_per_channel_int8(w, torch.bfloat16)
    got = linear.linear(x, linear.pack_weight(q))
    assert not got[0].any()
    torch.testing.assert_close(got.float(), linear.per_channel_int8_reference(x, q).float(), atol=1e-2, rtol=8e-3)


@needs_vnni_kernel
def test_int8_vnni_a_non_finite_activation_is_not_quantized_away():
    """A NaN or inf in a row makes that row's outputs NaN (the reference gives NaN or inf there),
    not a finite product with the bad value rounded to zero; the other rows are unaffected."""
    w, x = weight_and_input(3, 32, 300, seed=4)
    x[0, 5] = float("nan")
    x[1, 200] = float("inf")
    q = linear.quantize_per_channel_int8(w, torch.bfloat16)
    got = linear.linear(x, linear.pack_weight(q))
    expected = linear.per_channel_int8_reference(x, q)
    assert torch.isnan(got[0]).all() and torch.isnan(got[1]).all()
    assert not torch.isfinite(expected[:2]).any()
    torch.testing.assert_close(got[2].float(), expected[2].float(), atol=1e-2, rtol=8e-3)


def test_int8_weights_it_does_not_take_stay_as_they_are():
    for q in (linear.quantize_per_channel_int8(torch.randn(48, 32), torch.bfloat16),  # 48 outputs
              linear.quantize_per_channel_int8(torch.randn(64, 32), torch.float32)):  # float32 activations
        assert linear.pack_weight(q) is q
