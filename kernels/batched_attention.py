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
from kernels.metadata import AttentionMetadata


def batched_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    block_tables: torch.Tensor,
    seq_lens: torch.Tensor,
    scale: float,
    softcap: float | None,
) -> torch.Tensor:
    """Attention of one query token per sequence: ``q [B, q_heads, head_dim]`` over contexts of
    ``seq_lens [B]`` tokens read through ``block_tables [B, blocks]`` -> ``[B, q_heads, head_dim]``."""
    b, q_heads, head_dim = q.shape
    _, _, block_size, kv_heads, _ = kv_cache.shape
    group = q_heads // kv_heads
    span = block_tables.shape[1] * block_size
    keys = kv_cache[0, block_tables].reshape(b, span, kv_heads, head_dim)
    values = kv_cache[1, block_tables].reshape(b, span, kv_heads, head_dim)
    valid = torch.arange(span, device=q.device)[None, :] < seq_lens[:, None]  # [B, S]
    # padding slots may hold another sequence's (finite) values; zero them so 0 * v stays 0
    values = values.masked_fill(~valid[:, :, None, None], 0)
    scores = torch.einsum("bkgd,bskd->bkgs", q.view(b, kv_heads, group, head_dim).float(), keys.float()) * scale
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
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
    """Same contract as ``kernels.attention.paged_attention``; decode rows are batched."""
    decode = [i for i, n in enumerate(meta.query_lens_list) if n == 1]
    if len(decode) < 2:
        return paged_attention(q, kv_cache, meta, scale, softcap)
    block_size = kv_cache.shape[2]
    rows = torch.tensor(decode, dtype=torch.long, device=q.device)
    tokens = meta.query_start_loc[rows]
    longest = max(meta.seq_lens_list[i] for i in decode)
    tables = meta.block_tables[rows, : -(-longest // block_size)]
    out = torch.empty_like(q)
    out[tokens] = batched_decode_attention(q[tokens], kv_cache, tables, meta.seq_lens[rows], scale, softcap)
    if len(decode) < meta.num_seqs:
        rest = [i for i in range(meta.num_seqs) if meta.query_lens_list[i] != 1]
        sub = _subset(meta, rest)
        token_idx = torch.cat(
            [torch.arange(int(meta.query_start_loc[i]), int(meta.query_start_loc[i + 1])) for i in rest]
        ).to(q.device)
        out[token_idx] = paged_attention(q[token_idx], kv_cache, sub, scale, softcap)
    return out


def _subset(meta: AttentionMetadata, rows: list[int]) -> AttentionMetadata:
    """Metadata restricted to ``rows`` (their tokens renumbered from 0)."""
    q_lens = [meta.query_lens_list[i] for i in rows]
    starts = [0]
    for n in q_lens:
        starts.append(starts[-1] + n)
    idx = torch.tensor(rows, dtype=torch.long, device=meta.seq_lens.device)
    return AttentionMetadata(
        slot_mapping=meta.slot_mapping.new_empty(0),  # not used for reading
        query_start_loc=torch.tensor(starts, dtype=torch.int64, device=meta.seq_lens.device),
        seq_lens=meta.seq_lens[idx],
        block_tables=meta.block_tables[idx],
        block_size=meta.block_size,
        query_lens_list=q_lens,
        seq_lens_list=[meta.seq_lens_list[i] for i in rows],
    )
