"""Paged attention, PyTorch reference: write K/V into the block pool, gather per sequence, softmax.

The KV cache of one layer is a tensor ``[2, num_blocks, num_kv_heads, block_size, head_dim]``
(index 0 = keys, 1 = values): within a block each KV head's tokens are contiguous, so gathering a
sequence's blocks for one head yields ``[tokens, head_dim]`` rows a matmul reads directly (see
``kernels.batched_attention``). Keys are stored after RoPE, as Grok-1's reference does.

An int8 pool (``--kv-cache-dtype int8``) stores each token's head as ``head_dim`` int8 values
followed by their float32 scale (4 bytes), so its last dimension is ``head_dim + 4``: symmetric
quantization per (token, head), ``x ≈ q * scale`` with ``scale = max|x| / 127``. It nearly halves
the bytes a decode step reads at long contexts (which bound it on the CPU,
benchmarks/RESULTS.md#tpot-against-context) and, with one scale per 64-128 values, stays far closer
to bf16 than an fp8 cast does.
"""

from __future__ import annotations

import math

import torch

from grokd.kernels.arith import ceil_div
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.quant import quantize_rows

KV_SCALE_BYTES = 4  # an int8 row's float32 scale, stored after its values


def kv_row_width(head_dim: int, kv_dtype: torch.dtype) -> int:
    """Elements per (token, head) row of a pool in ``kv_dtype``: int8 rows carry their scale."""
    return head_dim + KV_SCALE_BYTES if kv_dtype == torch.int8 else head_dim


def kv_cache_shape(
    num_blocks: int, block_size: int, kv_heads: int, head_dim: int, kv_dtype: torch.dtype | None = None
) -> tuple[int, ...]:
    """Shape of one layer's KV pool; the single place that fixes the layout."""
    return (2, num_blocks, kv_heads, block_size, kv_row_width(head_dim, kv_dtype or torch.float32))


def kv_head_dim(kv_cache: torch.Tensor) -> int:
    """The head dimension a pool holds (an int8 pool's rows are 4 bytes wider: their scale)."""
    return kv_cache.shape[-1] - (KV_SCALE_BYTES if kv_cache.dtype == torch.int8 else 0)


def quantize_kv(x: torch.Tensor) -> torch.Tensor:
    """``x [..., head_dim]`` -> int8 rows ``[..., head_dim + 4]``: ``kernels.quant.quantize_rows``'s
    values ``round(x / scale)`` (half to even), then its float32 ``scale = max|x| / 127`` (1 for an
    all-zero row) as four bytes. ``kernels/csrc/rope_write_kv.c`` quantizes with exactly these operations."""
    values, scale = quantize_rows(x)
    return torch.cat((values, scale.view(torch.int8)), dim=-1)


def dequantize_kv(rows: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """int8 rows ``[..., head_dim + 4]`` -> ``[..., head_dim]`` in ``dtype`` (values times scale,
    in float32, then cast)."""
    head_dim = rows.shape[-1] - KV_SCALE_BYTES
    scale = rows[..., head_dim:].contiguous().view(torch.float32)
    return (rows[..., :head_dim].float() * scale).to(dtype)


def write_kv(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> None:
    """Scatter the new tokens' keys/values ``[num_tokens, kv_heads, head_dim]`` into their slots
    (quantized first for an int8 pool)."""
    _, num_blocks, kv_heads, _, width = kv_cache.shape
    rows = meta.write_rows(kv_heads, num_blocks)
    src = torch.stack((k, v))
    src = quantize_kv(src) if kv_cache.dtype == torch.int8 else src.to(kv_cache.dtype)
    kv_cache.view(-1, width).index_copy_(0, rows, src.reshape(-1, width))


def sequence_kv(
    kv_cache: torch.Tensor, table: torch.Tensor, length: int, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[length, kv_heads, head_dim]`` of one sequence, read through its table;
    an int8 pool's are dequantized to ``dtype``."""
    _, _, kv_heads, block_size, width = kv_cache.shape
    kv = kv_cache.index_select(1, table).transpose(2, 3).reshape(2, -1, kv_heads, width)[:, :length]
    if kv_cache.dtype == torch.int8:
        kv = dequantize_kv(kv, dtype or torch.float32)
    return kv[0], kv[1]


def length_temperature(positions: torch.Tensor, temperature_len: int) -> torch.Tensor:
    """Grok-2's length temperature: float32 ``log2(p) / log2(temperature_len)`` for each 0-based
    query position ``p`` beyond ``temperature_len``, else 1 (``temperature_len`` 0: all 1). The
    scores of a query are multiplied by it after the soft cap, before the mask and softmax, so
    queries far into a long context attend more sharply. Computed as ``log2(p) * (1 / log2(L))``,
    the order SGLang's kernels use."""
    if temperature_len <= 0:
        return torch.ones(positions.shape, dtype=torch.float32, device=positions.device)
    p = positions.to(torch.float32)
    inv = 1.0 / math.log2(temperature_len)
    return torch.where(positions > temperature_len, torch.log2(p.clamp(min=1.0)) * inv, torch.ones_like(p))


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
    temperature_len: int = 0,
) -> torch.Tensor:
    """Causal attention of ``q [num_tokens, q_heads, head_dim]`` over each sequence's cached context.

    ``q·k`` is computed in the activation dtype (rounded to bf16 in bf16 mode, as the Grok-1
    reference and HF's eager attention do), then in float32: multiplied by ``scale`` first,
    soft-capped as ``softcap * tanh(s / softcap)`` (Grok-1's order), masked and softmaxed; the
    probabilities are cast to the value dtype before the weighted sum, as in the Grok-1 reference.
    Query heads map to KV heads in contiguous groups (head ``h`` uses KV head ``h // group``).
    ``temperature_len`` > 0 (Grok-2) multiplies each query's capped scores by its
    ``length_temperature`` before the mask, by the query's 0-based position in its sequence (a
    chunk or a prefix-cached extension continues from the context already cached).
    """
    num_tokens, q_heads, head_dim = q.shape
    block_size, kv_heads = kv_cache.shape[3], kv_cache.shape[2]
    group = q_heads // kv_heads
    out = torch.empty_like(q)
    start = 0
    for i, (q_len, s_len) in enumerate(zip(meta.query_lens_list, meta.seq_lens_list, strict=True)):
        n_blocks = ceil_div(s_len, block_size)
        keys, values = sequence_kv(kv_cache, meta.block_tables[i, :n_blocks], s_len, q.dtype)
        qi = q[start : start + q_len].view(q_len, kv_heads, group, head_dim)
        scores = torch.einsum("tkgd,skd->kgts", qi, keys.to(q.dtype)).float() * scale
        if softcap is not None:
            scores = softcap * torch.tanh(scores / softcap)
        q_pos = torch.arange(s_len - q_len, s_len, device=q.device)
        if temperature_len > 0:
            scores = scores * length_temperature(q_pos, temperature_len)[:, None]
        k_pos = torch.arange(s_len, device=q.device)
        mask = k_pos[None, :] <= q_pos[:, None]
        scores = scores.masked_fill(~mask, float("-inf"))
        probs = torch.softmax(scores, dim=-1).to(values.dtype)
        o = torch.einsum("kgts,skd->tkgd", probs, values)
        out[start : start + q_len] = o.reshape(q_len, q_heads, head_dim).to(q.dtype)
        start += q_len
    return out
