"""Paged attention with every single-token (decode) row of a step done in a few batched ops.

The reference in ``kernels.attention`` loops over sequences in Python: per layer and step that is
one gather, two einsums and a softmax per sequence, which dominated CPU decode time at batch 16
(benchmarks/RESULTS.md#changelog). Here all decode rows read their context with *one* ``index_select``
through the block tables (``DecodeRows.gather_index``): thanks to the head-major block layout it lands as
``[rows, kv_heads, tokens, head_dim]``, which the two batched matmuls read without another copy.
Rows are padded to the longest context and masked with an additive bias built once per step.
Rows with several query tokens (prefill chunks) go through the reference. The numerics are the
reference's: ``q·k`` in the activation dtype, then float32 scale, soft-cap, mask and softmax,
probabilities cast to the value dtype before the weighted sum; an int8 pool's rows are dequantized
to the activation dtype after the gather.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from grokd.kernels.attention import dequantize_kv, length_temperature, paged_attention
from grokd.kernels.metadata import AttentionMetadata, DecodeRows


def batched_decode_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    rows: DecodeRows,
    scale: float,
    softcap: float | None,
    temperature_len: int = 0,
) -> torch.Tensor:
    """Attention of one query token per decode row: ``q [B, q_heads, head_dim]`` over each row's
    context read through ``rows.block_tables`` -> ``[B, q_heads, head_dim]``. A row's query is
    its context's last token, at position ``seq_len - 1``, which is what ``temperature_len``'s
    length temperature is taken of (read from the device tensor: CUDA graphs replay it)."""
    b, q_heads, head_dim = q.shape
    _, num_blocks, kv_heads, block_size, width = kv_cache.shape
    pool = kv_cache.view(2 * num_blocks * kv_heads, block_size * width)
    kv = pool.index_select(0, rows.gather_index(kv_heads, num_blocks)).view(2, b, kv_heads, -1, width)
    if kv_cache.dtype == torch.int8:
        kv = dequantize_kv(kv, q.dtype)
    keys, values = kv[0], kv[1]
    qg = q.view(b, kv_heads, q_heads // kv_heads, head_dim).to(keys.dtype)
    scores = torch.matmul(qg, keys.transpose(-1, -2)).float().mul_(scale)  # [B, kv, group, span]
    if softcap is not None:
        scores = torch.tanh(scores.div_(softcap)).mul_(softcap)
    if temperature_len > 0:
        scores.mul_(length_temperature(rows.seq_lens - 1, temperature_len)[:, None, None, None])
    probs = torch.softmax(scores.add_(rows.bias), dim=-1).to(values.dtype)
    # padding slots hold stale but finite values (the pool starts zeroed), so 0 * v stays 0
    out = torch.matmul(probs, values)
    return out.reshape(b, q_heads, head_dim).to(q.dtype)


def paged_attention_batched(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
    decode: Callable[..., torch.Tensor] = batched_decode_attention,
    prefill: Callable[..., torch.Tensor] = paged_attention,
    temperature_len: int = 0,
) -> torch.Tensor:
    """Same contract as ``kernels.attention.paged_attention``; decode rows are batched. The row
    split and gather indices come from ``meta`` (computed on the first layer, reused by the rest).
    ``decode`` does the decode rows (``batched_decode_attention``'s contract) and ``prefill`` the
    rows with several query tokens (``paged_attention``'s): dispatch swaps in
    ``kernels.cpu_decode_attention`` and ``kernels.prefill_attention`` on the CPU. Both get
    ``temperature_len`` (Grok-2's length temperature; 0: none)."""
    rows = meta.decode_rows
    if rows is None:
        return prefill(q, kv_cache, meta, scale, softcap, temperature_len)
    if rows.whole_batch:
        return decode(q, kv_cache, rows, scale, softcap, temperature_len)
    out = torch.empty_like(q)
    out[rows.tokens] = decode(q[rows.tokens], kv_cache, rows, scale, softcap, temperature_len)
    multi = meta.multi_token_rows
    assert multi is not None, "a batch that is not all decode rows has rows with several tokens"
    sub, tokens = multi
    out[tokens] = prefill(q[tokens], kv_cache, sub, scale, softcap, temperature_len)
    return out
