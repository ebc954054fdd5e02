"""Packed (oneDNN blocked) weights must give exactly ``F.linear``'s products, the reference."""

import pytest
import torch
import torch.nn.functional as F

from kernels.linear import can_pack, dense_linear, pack_weight

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("rows", [0, 1, 5, 33, 130])
def test_packed_bf16_weight_is_bit_identical_to_f_linear(rows: int) -> None:
    torch.manual_seed(rows)
    w = torch.randn(96, 80).to(torch.bfloat16)
    packed = pack_weight(w)
    assert packed.is_mkldnn and tuple(packed.shape) == (96, 80)
    x = torch.randn(rows, 80).to(torch.bfloat16)
    got = dense_linear(x, packed)
    assert got.dtype == torch.bfloat16 and got.shape == (rows, 96)
    assert torch.equal(got, F.linear(x, w))


@needs_onednn
def test_non_contiguous_and_mixed_dtype_inputs() -> None:
    torch.manual_seed(0)
    w = torch.randn(64, 48).to(torch.bfloat16)
    packed = pack_weight(w)
    x = torch.randn(7, 100).to(torch.bfloat16)[:, 10:58]  # a strided slice, as qkv splits give
    assert torch.equal(dense_linear(x, packed), F.linear(x.contiguous(), w))
    xf = torch.randn(3, 48)  # float32 activations over bf16 storage: cast in and back out
    out = dense_linear(xf, packed)
    assert out.dtype == torch.float32
    assert torch.equal(out, F.linear(xf.to(torch.bfloat16), w).float())


def test_weights_that_cannot_be_packed_pass_through_unchanged() -> None:
    w32 = torch.randn(8, 4)
    assert not can_pack(w32) and pack_weight(w32) is w32  # float32 stays dense
    assert pack_weight(torch.randn(2, 3, 4).to(torch.bfloat16)).dim() == 3  # not a matrix
    x = torch.randn(2, 4)
    assert torch.equal(dense_linear(x, w32), F.linear(x, w32))
