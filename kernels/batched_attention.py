"""Paged attention with every single-token (decode) row of a step done in one batched call.

The reference in ``kernels.attention`` loops over sequences in Python: per layer and step that is
one gather, two einsums and a softmax per sequence, which dominated CPU decode time at batch 16
(see benchmarks/RESULTS.md). Here all decode rows gather their context through the block tables at
once (padded to the longest context and masked), so a decode step costs a few large ops per layer
whatever the batch size. Rows with several query tokens (prefill chunks) still go through the
reference. The numerics are the reference's: fp32 scores, scale, soft-cap, fp32 softmax,
probabilities cast to the value dtype before the weighted sum.
"""

from __future__ import annotations

import torch

from kernels.attention import paged_attention
from kernels.metadata import AttentionMetadata, DecodeRows


def batched_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    rows: DecodeRows,
    scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """Attention of one query token per decode row: ``q [B, q_heads, head_dim]`` over each row's
    context read through ``rows.block_tables`` -> ``[B, q_heads, head_dim]``."""
    b, q_heads, head_dim = q.shape
    _, _, block_size, kv_heads, _ = kv_cache.shape
    group = q_heads // kv_heads
    span = rows.block_tables.shape[1] * block_size
    keys = kv_cache[0, rows.block_tables].reshape(b, span, kv_heads, head_dim)
    values = kv_cache[1, rows.block_tables].reshape(b, span, kv_heads, head_dim)
    # padding slots may hold another sequence's (finite) values; zero them so 0 * v stays 0
    values = values.masked_fill(~rows.valid[:, :, None, None], 0)
    scores = torch.einsum("bkgd,bskd->bkgs", q.view(b, kv_heads, group, head_dim).float(), keys.float()) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~rows.valid[:, None, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1).to(values.dtype)
    out = torch.einsum("bkgs,bskd->bkgd", probs, values)
    return out.reshape(b, q_heads, head_dim).to(q.dtype)


def paged_attention_batched(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Same contract as ``kernels.attention.paged_attention``; decode rows are batched. The row
    split and gather indices come from ``meta`` (computed on the first layer, reused by the rest)."""
    rows = meta.decode_rows
    if rows is None or rows.tokens.numel() < 2:
        return paged_attention(q, kv_cache, meta, scale, softcap)
    out = torch.empty_like(q)
    out[rows.tokens] = batched_decode_attention(q[rows.tokens], kv_cache, rows, scale, softcap)
    rest = meta.multi_token_rows
    if rest is not None:
        sub, tokens = rest
        out[tokens] = paged_attention(q[tokens], kv_cache, sub, scale, softcap)
    return out
