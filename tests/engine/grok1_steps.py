"""Driving a Grok-1 model straight through its step interface over a paged KV cache, as the model
runner does (imported by module name: tests/engine is on sys.path)."""

from __future__ import annotations

import torch

from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape
from grokd.kernels.metadata import AttentionMetadata

BLOCK = 4


def make_caches(model: Grok1ForCausalLM, num_blocks: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """The KV pool as the model runner sizes it: the model's (this rank's) ``num_kv_heads`` only."""
    shape = kv_cache_shape(num_blocks, BLOCK, model.num_kv_heads, model.head_dim)
    return [torch.zeros(shape, dtype=dtype) for _ in range(model.num_layers)]


def prefill_all(model: Grok1ForCausalLM, prompts: list[list[int]], dtype: torch.dtype) -> list[torch.Tensor]:
    """All prompts in one flat batch over scattered blocks; logits at every position per prompt."""
    caches = make_caches(model, 64, dtype)
    tables, next_block = [], 63
    for p in prompts:
        n = ceil_div(len(p), BLOCK)
        tables.append(list(range(next_block, next_block - n, -1)))
        next_block -= n
    lens = [len(p) for p in prompts]
    meta = AttentionMetadata.build(lens, lens, tables, BLOCK)
    ids = torch.tensor([t for p in prompts for t in p])
    pos = torch.cat([torch.arange(n) for n in lens])
    with torch.inference_mode():
        logits = model.compute_logits(model(ids, pos, caches, meta))
    return list(torch.split(logits, lens))
