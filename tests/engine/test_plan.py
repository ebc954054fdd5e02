"""The memory plan against Grok-1's parameter counts written out by hand, and against the bytes the
single-device model really holds for the tiny fixture."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.engine.plan import (
    RUNTIME_RESERVE_BYTES,
    GiB,
    ModelShape,
    PlanError,
    PlanRequest,
    kv_bytes_per_token,
    plan,
    rank_weight_bytes,
)
from grokd.server.plan_cli import model_shape
from grokd.weights.load import load
from grokd.weights.release import GROK1_RELEASE_CONFIG

GROK1 = ModelShape.from_config("grok-1", GROK1_RELEASE_CONFIG, int8_stored=True, embedding_dtype="float32")
H100, H200 = 80 * GiB, 141 * GiB

# Grok-1 at TP=8, one GPU, by hand: 6 of 48 query heads (768 columns), 1 of 8 KV heads (128 columns),
# 4096 of each expert's 32768 intermediate columns, 16384 of 131072 vocabulary rows; 64 layers.
# int8: 1 byte per weight plus bf16 scales, [1, N] for q/k/v/gate/up and 8 groups over the input
# rows of o-proj and down, of which each rank holds exactly one: [1, 6144].
INT8_ATTENTION = 64 * ((6144 * 768 + 768 * 2) + 2 * (6144 * 128 + 128 * 2) + (768 * 6144 + 6144 * 2))
INT8_EXPERTS = 64 * 8 * (2 * (6144 * 4096 + 4096 * 2) + (4096 * 6144 + 6144 * 2))
BF16_ATTENTION = 64 * (6144 * 768 + 2 * 6144 * 128 + 768 * 6144) * 2
BF16_EXPERTS = 64 * 8 * 3 * 6144 * 4096 * 2
EMBEDDING = 16384 * 6144 * 4 + 16384 * 6144 * 2  # float32 table rows + the bf16 output head's rows
REPLICATED = 64 * (8 * 6144 + 4 * 6144) * 4 + 6144 * 4  # router + 4 norms per layer, final norm
# one step of 2048 tokens: 4 hidden buffers, MoE copies (2048 × top-2) × (2·6144 + 3·4096), and the
# float32 logits of 64 sequences over the rank's 16384 and the gathered 131072 vocabulary entries
ACTIVATIONS = 4 * 2048 * 6144 * 2 + 2048 * 2 * (2 * 6144 + 3 * 4096) * 2 + 64 * (16384 + 131072) * 4
KV_BF16 = 64 * 2 * 1 * 128 * 2  # 32 KiB
KV_INT8 = 64 * 2 * 1 * (128 + 4)


def _expected(gpu: int, weights: int, kv_token: int) -> tuple[int, int, int]:
    free = int(gpu * 0.9) - weights - ACTIVATIONS - GiB
    blocks = free // (16 * kv_token)
    return free, blocks * 16, blocks // (8192 // 16)


@pytest.mark.parametrize(("gpu", "dtype", "weights"), [
    (H100, "int8", INT8_ATTENTION + INT8_EXPERTS + EMBEDDING + REPLICATED),
    (H200, "int8", INT8_ATTENTION + INT8_EXPERTS + EMBEDDING + REPLICATED),
    (H200, "bfloat16", BF16_ATTENTION + BF16_EXPERTS + EMBEDDING + REPLICATED),
])
def test_grok1_tp8_fits(gpu: int, dtype: str, weights: int) -> None:
    p = plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=gpu, weights_dtype=dtype))
    free, tokens, contexts = _expected(gpu, weights, KV_BF16)
    assert p.weights.total == weights
    assert p.activation_bytes == ACTIVATIONS and p.reserve_bytes == RUNTIME_RESERVE_BYTES
    assert (p.kv_free_bytes, p.kv_tokens, p.full_contexts) == (free, tokens, contexts)
    assert p.kv_bytes_per_token == KV_BF16 == 32 * 1024
    assert p.fits and p.reason == ""
    assert (p.q_heads_per_rank, p.kv_heads_per_rank, p.weights_dtype, p.kv_cache_dtype) == (6, 1, dtype, "bfloat16")


def test_grok1_int8_tp8_matches_the_spec_figure() -> None:
    p = plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100))
    assert p.weights_dtype == "int8"  # auto keeps the release's int8
    assert abs(p.weights.total / GiB - 37.3) < 0.06
    # the README's whole-model figures: ~320 GB int8 + scales, on all eight GPUs together
    assert 319e9 < p.weights_all_ranks < 321e9
    assert p.full_contexts == 133 and p.kv_tokens == 1_095_520


def test_grok1_bf16_does_not_fit_on_80gb() -> None:
    p = plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, weights_dtype="bfloat16"))
    weights = BF16_ATTENTION + BF16_EXPERTS + EMBEDDING + REPLICATED
    assert p.weights.total == weights
    assert not p.fits and p.kv_tokens == 0 and p.full_contexts == 0
    short = weights + ACTIVATIONS + GiB - int(H100 * 0.9)
    assert f"by {short / GiB:.2f} GiB" in p.reason and "exceed the 72.00 GiB budget" in p.reason


def test_grok1_on_one_gpu_does_not_fit() -> None:
    p = plan(GROK1, PlanRequest(tensor_parallel_size=1, gpu_memory_bytes=H200))
    assert not p.fits and p.weights.total > 290 * GiB and "exceed" in p.reason


def test_kv_room_for_less_than_one_context_does_not_fit() -> None:
    # a GPU whose budget leaves 0.2 GiB after weights, activations and reserve: ~6.5k tokens of KV
    need = plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100))
    room = need.weights.total + need.activation_bytes + need.reserve_bytes + GiB // 5
    req = PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=int(room / 0.9) + 1)
    p = plan(GROK1, req)
    assert 6000 < p.kv_tokens < 8192 and p.full_contexts == 0 and not p.fits
    assert f"holds {p.kv_tokens} tokens per GPU, less than one 8192-token context" in p.reason
    assert plan(GROK1, replace(req, max_model_len=p.kv_tokens)).fits


def test_kv_int8_holds_more_tokens_than_bf16() -> None:
    req = PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100)
    bf16, int8 = plan(GROK1, req), plan(GROK1, replace(req, kv_cache_dtype="int8"))
    assert int8.kv_bytes_per_token == KV_INT8 == 16896 and bf16.kv_bytes_per_token == KV_BF16
    assert int8.kv_free_bytes == bf16.kv_free_bytes  # same budget, rows 132/256 of the size
    assert int8.kv_blocks == bf16.kv_free_bytes // (16 * KV_INT8)
    assert 1.9 < int8.kv_tokens / bf16.kv_tokens < 1.95
    # the README's whole-model rows: 256 KiB bf16, 132 KiB int8 per token on one device
    assert kv_bytes_per_token(GROK1, 1, "bfloat16") == 256 * 1024
    assert kv_bytes_per_token(GROK1, 1, "int8") == 132 * 1024


@pytest.mark.parametrize("dtype", ["int8", "bfloat16"])
def test_expert_parallel_splits_the_same_weights(dtype: str) -> None:
    req = PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H200, weights_dtype=dtype)
    tp, ep = plan(GROK1, req), plan(GROK1, replace(req, enable_expert_parallel=True))
    assert ep.experts_per_rank == 1 and tp.experts_per_rank == 8
    assert ep.weights_all_ranks == tp.weights_all_ranks
    assert ep.weights == tp.weights  # 8 experts on 8 GPUs: one whole expert = 1/8 of every expert
    ep4 = rank_weight_bytes(GROK1, 4, True, dtype)
    tp4 = rank_weight_bytes(GROK1, 4, False, dtype)
    assert ep4.experts == tp4.experts and ep4.experts == 2 * ep.weights.experts
    # a whole expert's MoE buffers are 4x wider than a 1/8 slice, at most 2048 copies instead of 4096
    assert ep.activation_bytes - tp.activation_bytes == 2048 * (2 * 6144 + 3 * 32768) * 2 - 4096 * (
        2 * 6144 + 3 * 4096) * 2


def test_kv_heads_replicate_above_tp8() -> None:
    w16 = rank_weight_bytes(GROK1, 16, False, "bfloat16")
    # 3 query heads, and the one KV head a rank shares with another: k/v stay 128 columns each
    assert w16.attention == 64 * (6144 * 384 + 2 * 6144 * 128 + 384 * 6144) * 2
    assert kv_bytes_per_token(GROK1, 16, "bfloat16") == KV_BF16
    assert kv_bytes_per_token(GROK1, 4, "bfloat16") == 2 * KV_BF16
    # int8 above TP=8: o-proj's 8 scale groups of 768 rows, each rank's 384 rows sit in one group
    int8 = rank_weight_bytes(GROK1, 16, False, "int8")
    assert int8.attention == 64 * ((6144 * 384 + 384 * 2) + 2 * (6144 * 128 + 128 * 2) + (384 * 6144 + 6144 * 2))


@pytest.mark.parametrize("tp", [5, 7, 32])
def test_indivisible_layouts_are_refused(tp: int) -> None:
    with pytest.raises(PlanError, match="--tensor-parallel-size"):
        plan(GROK1, PlanRequest(tensor_parallel_size=tp, gpu_memory_bytes=H100))


def test_bad_limits_are_refused() -> None:
    with pytest.raises(PlanError, match="max-model-len"):
        plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, max_model_len=16384))
    with pytest.raises(PlanError, match="utilization"):
        plan(GROK1, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, gpu_memory_utilization=1.5))


def _model_bytes(model: torch.nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize(("layout", "weights_dtype", "resolved"), [
    ("release", "auto", "int8"),
    ("release", "bfloat16", "bfloat16"),
    ("hf", "auto", "bfloat16"),
    ("hf", "int8", "int8"),  # quantised at load: one scale group everywhere
])
def test_one_gpu_plan_is_what_the_model_holds(grok1_tiny_dir, grok1_tiny_hf_dir, layout: str,
                                               weights_dtype: str, resolved: str) -> None:
    path = grok1_tiny_dir if layout == "release" else grok1_tiny_hf_dir
    shape = model_shape(str(path))
    assert (shape.int8_stored, shape.embedding_dtype) == (layout == "release", "float32")
    model = Grok1ForCausalLM.from_checkpoint(load(path), torch.bfloat16, weights_dtype)
    p = plan(shape, PlanRequest(tensor_parallel_size=1, gpu_memory_bytes=GiB, weights_dtype=weights_dtype))
    assert p.weights_dtype == resolved
    assert p.weights.total == _model_bytes(model)


# Grok-2 by hand: 64 layers of hidden 8192; attention q/o 8192 x 8192, k/v 8192 x 1024 (8 KV heads
# of 128); 8 experts x 3 x 8192 x 16384; the dense MLP 3 x 8192 x 32768; embedding and untied head
# 131072 x 8192 each; router 8 x 8192 and four norms per layer plus the final norm in float32.
G2_ATTENTION = 64 * (2 * 8192 * 8192 + 2 * 8192 * 1024)
G2_EXPERTS = 64 * 8 * 3 * 8192 * 16384
G2_DENSE = 64 * 3 * 8192 * 32768
G2_VOCAB = 2 * 131072 * 8192
G2_REPLICATED = (64 * (8 * 8192 + 4 * 8192) + 8192) * 4


def test_grok2_bf16_is_about_502_gib_and_63_per_gpu_at_tp8() -> None:
    shape = model_shape("grok-2")
    assert (shape.intermediate_size, shape.dense_intermediate_size, shape.tied_embeddings) == (16384, 32768, False)
    one = plan(shape, PlanRequest(tensor_parallel_size=1, gpu_memory_bytes=1024 * GiB, weights_dtype="bfloat16"))
    assert one.weights.total == 2 * (G2_ATTENTION + G2_EXPERTS + G2_DENSE + G2_VOCAB) + G2_REPLICATED
    assert round(one.weights.total / GiB) == 502
    p = plan(shape, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, weights_dtype="bfloat16"))
    w = p.weights
    assert (w.attention, w.experts, w.dense) == (2 * G2_ATTENTION // 8, 2 * G2_EXPERTS // 8, 2 * G2_DENSE // 8)
    assert w.embedding == 2 * G2_VOCAB // 8 and w.replicated == G2_REPLICATED
    assert round(w.total / GiB) == 63 and p.fits
    assert p.kv_bytes_per_token == 64 * 2 * 1 * 128 * 2


def test_grok2_fp8_is_about_half() -> None:
    shape = model_shape("grok-2")
    bf16 = plan(shape, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, weights_dtype="bfloat16"))
    fp8 = plan(shape, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, weights_dtype="fp8"))
    int8 = plan(shape, PlanRequest(tensor_parallel_size=8, gpu_memory_bytes=H100, weights_dtype="int8"))
    linear = (G2_ATTENTION + G2_EXPERTS + G2_DENSE) // 8
    # one byte per linear weight instead of two, plus int8's bf16 scale rows (the same layout)
    assert fp8.weights.total == int8.weights.total
    assert 0 < fp8.weights.total - (bf16.weights.total - linear) < 0.001 * fp8.weights.total
    assert 0.49 < fp8.weights_all_ranks / bf16.weights_all_ranks < 0.52


def test_grok2_one_gpu_plan_is_what_the_model_holds(grok2_tiny_dir) -> None:
    from grokd.engine.models.grok2 import Grok2ForCausalLM

    model = Grok2ForCausalLM.from_checkpoint(load(grok2_tiny_dir), dtype=torch.bfloat16)
    held = sum(p.numel() * p.element_size() for p in model.parameters())
    held += model.lm_head.numel() * model.lm_head.element_size()
    p = plan(model_shape(str(grok2_tiny_dir)), PlanRequest(tensor_parallel_size=1, gpu_memory_bytes=GiB))
    assert p.weights_dtype == "bfloat16" and p.weights.total == held
