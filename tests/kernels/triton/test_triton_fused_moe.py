"""The fused MoE against its PyTorch twin (``kernels.moe.moe_forward``): 8 experts, top-2, the
release's int8 with 1 and 8 scale groups and plain weights, full widths and a tensor-parallel
slice of the intermediate dimension, a rank holding some experts only, experts that get no
token; and the device-side schedule it runs on."""

from __future__ import annotations

import pytest
import torch
from torch.nn.functional import gelu
from torch.overrides import TorchFunctionMode

from grokd.kernels.moe import ExpertWeights, moe_forward
from grokd.kernels.triton import moe_align
from grokd.kernels.triton.fused_moe import fused_moe
from tests.kernels.triton.compare import assert_relative_close

E, TOP_K, D, F = 8, 2, 32, 160  # F past one interpreted tile: two N tiles, two K steps


def _experts(groups: int, device: str, f: int = F, seed: int = 0) -> list[ExpertWeights]:
    g = torch.Generator().manual_seed(seed)
    shapes = ((E, D, f), (E, D, f), (E, f, D))  # gate, up, down in the release's [in, out] order
    out = []
    for shape in shapes:
        q = torch.randint(-127, 128, shape, dtype=torch.int8, generator=g)
        s = (torch.rand(E, groups, shape[2], generator=g) * 0.02 + 1e-3).to(torch.bfloat16)
        out.append(ExpertWeights(q.to(device), s.to(device)))
    return out


def _inputs(tokens: int, device: str, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, D, generator=g).to(device), torch.randn(E, D, generator=g).to(device)


@pytest.mark.parametrize("groups", [1, 8])
@pytest.mark.parametrize("tokens", [1, 3, 17, 64])
def test_int8_full_width_matches_twin(device, groups, tokens):
    w = _experts(groups, device)
    x, router = _inputs(tokens, device)
    assert_relative_close(fused_moe(x, router, *w, top_k=TOP_K), moe_forward(x, router, *w, top_k=TOP_K))


@pytest.mark.parametrize("tokens", [1, 17])
def test_grok2_exact_gelu_and_capped_router_match_twin(device, tokens):
    """Grok-2's experts: exact (erf) GELU and a router whose logits are soft-capped at 30; logits
    scaled up so the cap changes which experts win."""
    w = _experts(8, device)
    x, router = _inputs(tokens, device)
    router = router * 40
    got = fused_moe(x, router, *w, top_k=TOP_K, activation=gelu, router_softcap=30.0, out_dtype=torch.float32)
    want = moe_forward(x, router, *w, top_k=TOP_K, activation=gelu, out_dtype=torch.float32, router_softcap=30.0)
    assert_relative_close(got, want)
    assert not torch.allclose(want, moe_forward(x, router, *w, top_k=TOP_K, out_dtype=torch.float32,
                                                router_softcap=30.0), atol=1e-4)


@pytest.mark.parametrize("groups", [1, 8])
def test_tensor_parallel_slice_matches_twin(device, groups):
    """One rank of four: a quarter of every expert's intermediate dimension (gate/up columns, down
    rows, and their scale rows: 8 groups over 160 rows are 2 over the rank's 40), float32 partial sums."""
    w = _experts(groups, device)
    cols = slice(F // 4, F // 2)
    shard_groups = max(1, groups // 4)
    gate, up, down = w
    sliced = [ExpertWeights(gate.weight[:, :, cols].contiguous(), gate.scales[:, :, cols].contiguous()),
              ExpertWeights(up.weight[:, :, cols].contiguous(), up.scales[:, :, cols].contiguous()),
              ExpertWeights(down.weight[:, cols].contiguous(),
                            down.scales[:, :shard_groups].contiguous())]
    x, router = _inputs(17, device)
    got = fused_moe(x, router, *sliced, top_k=TOP_K, out_dtype=torch.float32)
    assert got.dtype == torch.float32
    assert_relative_close(got, moe_forward(x, router, *sliced, top_k=TOP_K, out_dtype=torch.float32))


def test_expert_parallel_rank_matches_twin(device):
    """A rank holding experts 2..5 only: tokens routed elsewhere add nothing here."""
    gate, up, down = _experts(8, device)
    held = [ExpertWeights(p.weight[2:6], p.scales[2:6]) for p in (gate, up, down)]
    x, router = _inputs(17, device)
    got = fused_moe(x, router, *held, top_k=TOP_K, first_expert=2, out_dtype=torch.float32)
    assert_relative_close(got, moe_forward(x, router, *held, top_k=TOP_K, first_expert=2, out_dtype=torch.float32))


def test_experts_without_tokens(device):
    """A router that sends every token to experts 6 and 7: six experts get nothing."""
    w = _experts(1, device)
    x, router = _inputs(9, device)
    router = torch.zeros_like(router)
    router[6], router[7] = 1.0, 0.5
    x = x.abs() + 0.1  # positive features: experts 6 then 7 score highest for every token
    assert_relative_close(fused_moe(x, router, *w, top_k=TOP_K), moe_forward(x, router, *w, top_k=TOP_K))


def test_plain_weights_and_bf16(device):
    """Plain ``[E, out, in]`` weights (a dequantised checkpoint), float32 and bf16 activations."""
    gate, up, down = _experts(8, device)
    plain = [ExpertWeights(p.weight.float().mul(p.scales.float().repeat_interleave(p.weight.shape[1] // p.scales.shape[1], 1))
                           .to(torch.bfloat16).transpose(1, 2).contiguous()) for p in (gate, up, down)]
    x, router = _inputs(5, device)
    assert_relative_close(fused_moe(x, router, *plain, top_k=TOP_K), moe_forward(x, router, *plain, top_k=TOP_K))
    xb = x.bfloat16()
    got = fused_moe(xb, router, gate, up, down, top_k=TOP_K)
    assert got.dtype == torch.bfloat16
    # the twin's roundings, float32 sums in another order: a bf16 ulp here and there
    assert_relative_close(got, moe_forward(xb, router, gate, up, down, top_k=TOP_K), 1e-2)


def test_schedule_pads_runs_per_expert():
    ids = torch.tensor([[3, 0], [3, 5], [0, 3]])
    s = moe_align.schedule(ids, num_experts=8, first_expert=0, block_m=4)
    assert s.num_blocks == moe_align.max_blocks(6, 8, 4)
    rows = s.sorted_slots.view(-1, 4)
    # expert 0: slots 1, 4; expert 3: slots 0, 2, 5; expert 5: slot 3; each run padded to 4 rows
    assert rows[0].tolist() == [1, 4, 6, 6] and rows[1].tolist() == [0, 2, 5, 6] and rows[2].tolist() == [3, 6, 6, 6]
    assert s.block_expert.tolist()[:4] == [0, 3, 5, -1]
    assert set(s.block_expert.tolist()[3:]) == {-1}
    held = moe_align.schedule(ids, num_experts=2, first_expert=3, block_m=4)  # experts 3 and 4 only
    assert held.sorted_slots.view(-1, 4)[0].tolist() == [0, 2, 5, 6]
    assert held.block_expert.tolist()[:2] == [0, -1]


class _HostReads(TorchFunctionMode):
    """Records every tensor operation that hands a device value to the host."""

    READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "nonzero", "bincount"}

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def test_no_host_reads(device):
    """Routing, the schedule, the launches and the final sum hand nothing back to the host: a CUDA
    graph can capture the whole op."""
    w = _experts(8, device)
    x, router = _inputs(5, device)
    mode = _HostReads()
    with mode:
        fused_moe(x, router, *w, top_k=TOP_K)
    assert mode.seen == []
    with mode:  # the twin counts each expert's tokens on the host
        moe_forward(x, router, *w, top_k=TOP_K)
    assert "tolist" in mode.seen


@pytest.mark.parametrize("groups", [1, 8])
def test_fp8_experts_match_twin(device, groups):
    """``--weights-dtype fp8``: e4m3 values in the grouped layout, dequantised per tile as int8 is."""
    from grokd.kernels.quant import FP8, GroupedInt8Weight, quantize_grouped_fp8

    fp8 = []
    for w in _experts(groups, device):
        q = quantize_grouped_fp8(GroupedInt8Weight(w.weight.cpu(), w.scales.cpu()).dequantize(), groups)
        fp8.append(ExpertWeights(q.qweight.to(device), q.scales.to(device)))
    assert fp8[0].weight.dtype == FP8
    for tokens in (1, 17):
        x, router = _inputs(tokens, device)
        assert_relative_close(fused_moe(x, router, *fp8, top_k=TOP_K), moe_forward(x, router, *fp8, top_k=TOP_K))
