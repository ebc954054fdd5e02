"""Prefill attention (rows with several query tokens) through torch's fused
``scaled_dot_product_attention``, reading each sequence's context from the paged pool.

Why: the reference (``kernels.attention.paged_attention``, this kernel's twin) materialises every
sequence's ``[kv_heads, group, q_len, context]`` float32 scores and runs the mask, scale and
softmax over them as separate ops, which at long prompts costs several times what SDPA's fused
kernel does: that one tiles the scores and never writes them out
(benchmarks/RESULTS.md#cpu-prefill-attention).

Numerics: the same softmax(scale * q.k) . v with the causal mask aligned to the context's end
(the queries are its last ``q_len`` tokens: chunked prefill), grouped-query heads without copying
the keys. SDPA accumulates q.k in float32 and does not round the scores to bf16 first, as the
reference (and HF's eager attention) does; HF's default ``sdpa`` attention computes it the same
way. Soft-capped attention (Grok-1, Grok-2) has no SDPA form and takes the reference, length
temperature included. Without a cap, a length temperature (a per-query multiplier of the scores)
is folded into the queries: row ``t`` of q times its ``length_temperature``, the same as scaling
that row's scores (up to q's rounding in bf16).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import length_temperature, paged_attention, sequence_kv
from grokd.kernels.metadata import AttentionMetadata


def paged_prefill_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
    temperature_len: int = 0,
) -> torch.Tensor:
    """``kernels.attention.paged_attention``'s contract: ``q [num_tokens, q_heads, head_dim]`` over
    each sequence's cached context (its own new tokens included) -> the same shape and dtype."""
    if softcap is not None:
        return paged_attention(q, kv_cache, meta, scale, softcap, temperature_len)
    block_size = kv_cache.shape[3]
    out = torch.empty_like(q)
    start = 0
    for i, (q_len, s_len) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list, strict=True)):
        blocks = ceil_div(s_len, block_size)
        keys, values = sequence_kv(kv_cache, meta.block_tables[i, :blocks], s_len, q.dtype)  # [s_len, kv, dim]
        qi = q[start : start + q_len]
        if temperature_len > 0:
            positions = torch.arange(s_len - q_len, s_len, device=q.device)
            qi = (qi.float() * length_temperature(positions, temperature_len)[:, None, None]).to(q.dtype)
        o = F.scaled_dot_product_attention(
            qi.transpose(0, 1).unsqueeze(0),
            keys.to(q.dtype).transpose(0, 1).unsqueeze(0),
            values.to(q.dtype).transpose(0, 1).unsqueeze(0),
            attn_mask=causal_lower_right(q_len, s_len),
            scale=scale,
            enable_gqa=True,
        )
        out[start : start + q_len] = o[0].transpose(0, 1)
        start += q_len
    return out
