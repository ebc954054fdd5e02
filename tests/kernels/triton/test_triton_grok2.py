"""Grok-2 on the Triton kernels against the grok2-tiny fixture's float32 reference: the fused MoE
with exact GELU and the soft-capped router, and paged attention with the length temperature
(threshold 16 in the fixture, so the longer prompts' later queries are scaled), in one prefill
batch and in decode steps past the threshold. On these kernels the model can be captured in CUDA
graphs, as Grok-1 can."""

from __future__ import annotations

import torch

from grokd.engine.models.grok2 import Grok2ForCausalLM
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape
from grokd.kernels.metadata import AttentionMetadata
from grokd.weights import load

BLOCK = 16
LOGPROB_TOL = 2e-3


def _logprob_error(logits: torch.Tensor, ref_logits: list[list[float]]) -> float:
    ref = torch.tensor(ref_logits, dtype=torch.float64).log_softmax(-1)
    return (logits.double().log_softmax(-1) - ref).abs().max().item()


def test_grok2_on_triton_kernels_matches_reference(device, grok2_tiny_dir, grok2_tiny_reference):
    model = Grok2ForCausalLM.from_checkpoint(load(grok2_tiny_dir), torch.float32, "auto", device,
                                             kernel_backend="triton")
    assert model.supports_cuda_graphs
    cases = grok2_tiny_reference["fp32"]["single"]
    prompts = [c["prompt"] for c in cases]
    assert max(map(len, prompts)) > model.config.attn_temperature_len  # the temperature is exercised
    caches = [torch.zeros(kv_cache_shape(32, BLOCK, model.num_kv_heads, model.head_dim), device=device)
              for _ in range(model.num_layers)]
    tables, first = [], 0
    for p in prompts:
        n = ceil_div(len(p) + 4, BLOCK)
        tables.append(list(range(first, first + n)))
        first += n
    lens = [len(p) for p in prompts]
    with torch.inference_mode():
        meta = AttentionMetadata.build(lens, lens, tables, BLOCK, device=device)
        ids = torch.tensor([t for p in prompts for t in p], device=device)
        pos = torch.cat([torch.arange(n) for n in lens]).to(device)
        logits = torch.split(model.compute_logits(model(ids, pos, caches, meta)), lens)
        for case, got in zip(cases, logits, strict=True):
            assert _logprob_error(got, case["logits"]) < LOGPROB_TOL
        # three decode steps for every prompt at once, fed the reference's greedy tokens
        ctx = [list(p) for p in prompts]
        for step in range(3):
            toks = [c["greedy"][step] for c in cases]
            for c, t in zip(ctx, toks, strict=True):
                c.append(t)
            meta = AttentionMetadata.build([1] * len(ctx), [len(c) for c in ctx], tables, BLOCK, device=device)
            out = model.compute_logits(model(torch.tensor(toks, device=device),
                                             torch.tensor([len(c) - 1 for c in ctx], device=device), caches, meta))
            for case, row in zip(cases, out, strict=True):
                if step + 1 < len(case["greedy"]):
                    assert int(row.argmax()) == case["greedy"][step + 1]
