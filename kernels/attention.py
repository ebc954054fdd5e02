"""Paged attention, PyTorch reference: write K/V into the block pool, gather per sequence, softmax.

The KV cache of one layer is a tensor ``[2, num_blocks, num_kv_heads, block_size, head_dim]``
(index 0 = keys, 1 = values): within a block each KV head's tokens are contiguous, so gathering a
sequence's blocks for one head yields ``[tokens, head_dim]`` rows a matmul reads directly (see
``kernels.batched_attention``). Keys are stored after RoPE, as Grok-1's reference does.
"""

from __future__ import annotations

import torch

from kernels.metadata import AttentionMetadata


def kv_cache_shape(num_blocks: int, block_size: int, kv_heads: int, head_dim: int) -> tuple[int, ...]:
    """Shape of one layer's KV pool; the single place that fixes the layout."""
    return (2, num_blocks, kv_heads, block_size, head_dim)


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
    """Scatter the new tokens' keys/values ``[num_tokens, kv_heads, head_dim]`` into their slots."""
    _, num_blocks, kv_heads, _, head_dim = kv_cache.shape
    rows = meta.write_rows(kv_heads, num_blocks)
    src = torch.stack((k, v)).to(kv_cache.dtype).reshape(-1, head_dim)
    kv_cache.view(-1, head_dim).index_copy_(0, rows, src)


def sequence_kv(kv_cache: torch.Tensor, table: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[length, kv_heads, head_dim]`` of one sequence, read through its table."""
    _, _, kv_heads, block_size, head_dim = kv_cache.shape
    kv = kv_cache.index_select(1, table).transpose(2, 3).reshape(2, -1, kv_heads, head_dim)[:, :length]
    return kv[0], kv[1]


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
) -> torch.Tensor:
    """Causal attention of ``q [num_tokens, q_heads, head_dim]`` over each sequence's cached context.

    ``q·k`` is computed in the activation dtype (rounded to bf16 in bf16 mode, as the Grok-1
    reference and HF's eager attention do), then in float32: multiplied by ``scale`` first,
    soft-capped as ``softcap * tanh(s / softcap)`` (Grok-1's order), masked and softmaxed; the
    probabilities are cast to the value dtype before the weighted sum, as in the Grok-1 reference.
    Query heads map to KV heads in contiguous groups (head ``h`` uses KV head ``h // group``).
    """
    num_tokens, q_heads, head_dim = q.shape
    block_size, kv_heads = kv_cache.shape[3], kv_cache.shape[2]
    group = q_heads // kv_heads
    out = torch.empty_like(q)
    start = 0
    for i, (q_len, s_len) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list, strict=True)):
        n_blocks = (s_len + block_size - 1) // block_size
        keys, values = sequence_kv(kv_cache, meta.block_tables[i, :n_blocks], s_len)
        qi = q[start : start + q_len].view(q_len, kv_heads, group, head_dim)
        scores = torch.einsum("tkgd,skd->kgts", qi, keys.to(q.dtype)).float() * scale
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
