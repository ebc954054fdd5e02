"""Which kernels ``--kernel-backend`` selects (``kernels.dispatch``)."""

from __future__ import annotations

import pytest

from grokd.kernels import dispatch
from grokd.kernels.triton import fused_moe, int8_linear, paged_attention, runtime


def test_resolve_backend():
    assert dispatch.resolve_backend("auto", "cpu") == "torch"  # auto: Triton on CUDA only
    assert dispatch.resolve_backend("auto", "cuda") == "triton"  # triton imports here
    assert dispatch.resolve_backend("torch", "cuda") == "torch"
    assert dispatch.resolve_backend("triton", "cpu") == "triton"
    with pytest.raises(ValueError, match="kernel_backend: expected one of auto, torch, triton"):
        dispatch.resolve_backend("cuda", "cpu")


def test_triton_kernels_replace_attention_moe_and_linear(device):
    k = dispatch.select_kernels(device, "triton")
    assert k.attention is paged_attention.paged_attention and k.moe is fused_moe.fused_moe
    assert k.linear is int8_linear.linear and k.sync_free
    assert k.decoder_layer is None and k.decoder_stack is None  # the CPU C layer would bypass them
    torch_kernels = dispatch.select_kernels(device, "torch")
    assert not torch_kernels.sync_free and torch_kernels.moe is not fused_moe.fused_moe


@pytest.mark.skipif(not runtime.INTERPRETED, reason="needs the interpreted kernels")
def test_check_tensors_names_the_fix():
    import torch

    runtime.check_tensors(torch.zeros(1))
    if torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="unset TRITON_INTERPRET"):
            runtime.check_tensors(torch.zeros(1, device="cuda"))
