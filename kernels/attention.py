"""Paged attention, PyTorch reference: write K/V into the block pool, gather per sequence, softmax.

The KV cache of one layer is a tensor ``[2, num_blocks, block_size, num_kv_heads, head_dim]``
(index 0 = keys, 1 = values). Keys are stored after RoPE, as Grok-1's reference does.
"""

from __future__ import annotations

import torch

from kernels.metadata import AttentionMetadata


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
    """Scatter the new tokens' keys/values ``[num_tokens, kv_heads, head_dim]`` into their slots."""
    _, num_blocks, block_size, kv_heads, head_dim = kv_cache.shape
    flat = kv_cache.view(2, num_blocks * block_size, kv_heads, head_dim)
    flat[0].index_copy_(0, meta.slot_mapping, k.to(kv_cache.dtype))
    flat[1].index_copy_(0, meta.slot_mapping, v.to(kv_cache.dtype))


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Causal attention of ``q [num_tokens, q_heads, head_dim]`` over each sequence's cached context.

    Scores are computed in float32, multiplied by ``scale`` first, then soft-capped as
    ``softcap * tanh(s / softcap)`` (Grok-1's order), masked, and softmaxed in float32; the
    probabilities are cast to the value dtype before the weighted sum, as in the Grok-1 reference.
    Query heads map to KV heads in contiguous groups (head ``h`` uses KV head ``h // group``).
    """
    num_tokens, q_heads, head_dim = q.shape
    _, _, block_size, kv_heads, _ = kv_cache.shape
    group = q_heads // kv_heads
    out = torch.empty_like(q)
    start = 0
    for i, (q_len, s_len) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list, strict=True)):
        n_blocks = (s_len + block_size - 1) // block_size
        table = meta.block_tables[i, :n_blocks]
        keys = kv_cache[0, table].reshape(n_blocks * block_size, kv_heads, head_dim)[:s_len]
        values = kv_cache[1, table].reshape(n_blocks * block_size, kv_heads, head_dim)[:s_len]
        qi = q[start : start + q_len].view(q_len, kv_heads, group, head_dim)
        # scores[kv, g, t, s] in fp32
        scores = torch.einsum("tkgd,skd->kgts", qi.float(), keys.float()) * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        q_pos = torch.arange(s_len - q_len, s_len, device=q.device)
        k_pos = torch.arange(s_len, device=q.device)
        mask = k_pos[None, :] <= q_pos[:, None]
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        o = torch.einsum("kgts,skd->tkgd", probs, values)
        out[start : start + q_len] = o.reshape(q_len, q_heads, head_dim).to(q.dtype)
        start += q_len
    return out
