"""Paged attention over grokd's KV pool, for decode and (chunked) prefill rows in one launch.

The PyTorch twins gather each sequence's whole context out of the pool (the batched decode path
pads every row to the longest one) and materialise the float32 scores. Here one program takes one
tile of a sequence's query tokens *with all the query heads of one KV head* (GQA: the group's rows
share every key and value tile it loads) and walks the sequence's keys through its block table,
``BLOCK_N`` at a time, with an online softmax; scores never leave registers.

Split-KV: a decode batch has one query token per row, too few programs to fill a GPU at small
batch, so the context is also cut into ``num_splits`` ranges of keys, each program producing a
partial output and its log-sum-exp; ``_merge`` combines them with a few tensor ops. One split
(prefill, and everything interpreted unless asked) writes the final output directly.

Layout (``kernels.attention``): one layer's pool is ``[2, blocks, kv_heads, block_size, width]``;
an int8 pool's rows are ``head_dim`` int8 values followed by their float32 scale, read here
through a float32 view of the same memory. The queries are the last ``q_len`` tokens of a context of
``seq_len``: query token ``t`` sees keys ``0 .. seq_len - q_len + t`` (the causal mask aligned to the
context's end, as chunked prefill needs).

Numerics, in the twin's order: ``q.k`` accumulated in float32 (rounded to bf16 with bf16
activations, as the twin's bf16 einsum does), times ``scale``, then ``softcap * tanh(s / softcap)``
(Grok-1), times Grok-2's length temperature ``log2(p) / log2(temperature_len)`` for a query at
position ``p`` beyond ``temperature_len``, masked, softmax in float32. int8 keys and values are
dequantised as the twin does (values times scale in float32, rounded to the activation dtype).
The online softmax normalises at the end instead of rounding normalised probabilities to the
value dtype first: float32 results agree with the twin to rounding, bf16 ones within bf16 tolerance.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from grokd.kernels import attention as _attention
from grokd.kernels.arith import ceil_div
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.triton import runtime
from grokd.kernels.triton.numerics import dot, round_bf16, tanh


@triton.jit
def _attention_tile(q_ptr, kv_ptr, kv_scale_ptr, tables_ptr, seq_lens_ptr, q_start_ptr, o_ptr, lse_ptr,
                    stride_qt, stride_qh, stride_kv, stride_blk, stride_head, stride_slot, stride_tab,
                    stride_os, stride_ot, stride_oh, stride_ls, stride_lt,
                    sm_scale, softcap, temperature_len, inv_log2_len, keys_per_split, num_splits,
                    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr,
                    HEAD_DIM: tl.constexpr, PAGE: tl.constexpr, KV_INT8: tl.constexpr, HAS_CAP: tl.constexpr,
                    HAS_TEMP: tl.constexpr, ACT_BF16: tl.constexpr, LOW_DOT: tl.constexpr):
    seq = tl.program_id(0)
    tile = tl.program_id(1)
    head_split = tl.program_id(2)
    kv_head = head_split // num_splits
    split = head_split % num_splits
    q_start = tl.load(q_start_ptr + seq)
    q_len = tl.load(q_start_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    if tile * BLOCK_Q < q_len:
        r = tl.arange(0, BLOCK_Q * GROUP_PAD)
        tok = tile * BLOCK_Q + r // GROUP_PAD
        g = r % GROUP_PAD
        row_ok = (tok < q_len) & (g < GROUP)
        q_pos = seq_len - q_len + tok
        head = kv_head * GROUP + g
        d = tl.arange(0, HEAD_DIM)
        q_rows = (q_start + tok).to(tl.int64) * stride_qt + head * stride_qh
        q = tl.load(q_ptr + q_rows[:, None] + d[None, :], mask=row_ok[:, None], other=0).to(tl.float32)
        lo = split * keys_per_split
        # keys past the last query of this tile are masked for every row: not read
        last = seq_len - q_len + tl.minimum(q_len, (tile + 1) * BLOCK_Q)
        hi = tl.minimum(lo + keys_per_split, last)
        if HAS_TEMP:  # Grok-2's length temperature per query position (attention.length_temperature)
            p_f = tl.maximum(q_pos.to(tl.float32), 1.0)
            temp = tl.where(q_pos > temperature_len, tl.log2(p_f) * inv_log2_len, 1.0)
        m_i = tl.full((BLOCK_Q * GROUP_PAD,), float("-inf"), dtype=tl.float32)
        l_i = tl.zeros((BLOCK_Q * GROUP_PAD,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_Q * GROUP_PAD, HEAD_DIM), dtype=tl.float32)
        for n0 in range(lo, hi, BLOCK_N):
            n = n0 + tl.arange(0, BLOCK_N)
            n_ok = n < hi
            block = tl.load(tables_ptr + seq * stride_tab + n // PAGE, mask=n_ok, other=0).to(tl.int64)
            base = block * stride_blk + kv_head * stride_head + (n % PAGE) * stride_slot
            k = tl.load(kv_ptr + base[None, :] + d[:, None], mask=n_ok[None, :], other=0).to(tl.float32)
            v = tl.load(kv_ptr + stride_kv + base[:, None] + d[None, :], mask=n_ok[:, None], other=0).to(tl.float32)
            if KV_INT8:  # a row's float32 scale follows its values (4-byte aligned: a float32 view)
                k_scale = tl.load(kv_scale_ptr + (base + HEAD_DIM) // 4, mask=n_ok, other=0)
                v_scale = tl.load(kv_scale_ptr + (stride_kv + base + HEAD_DIM) // 4, mask=n_ok, other=0)
                k = k * k_scale[None, :]
                v = v * v_scale[:, None]
                if ACT_BF16:
                    k = round_bf16(k)
                    v = round_bf16(v)
            s = dot(q, k, tl.zeros((BLOCK_Q * GROUP_PAD, BLOCK_N), dtype=tl.float32), LOW_DOT)
            if ACT_BF16:
                s = round_bf16(s)
            s = s * sm_scale
            if HAS_CAP:
                s = softcap * tanh(s / softcap)
            if HAS_TEMP:
                s = s * temp[:, None]
            visible = n_ok[None, :] & (n[None, :] <= q_pos[:, None])
            s = tl.where(visible, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(s - m_safe[:, None])
            alpha = tl.exp(m_i - m_safe)
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = dot(p, v, acc * alpha[:, None], LOW_DOT)
            m_i = m_new
        has = l_i > 0
        o = acc / tl.where(has, l_i, 1.0)[:, None]
        lse = tl.where(has, m_i + tl.log(tl.where(has, l_i, 1.0)), float("-inf"))
        o_rows = split * stride_os + (q_start + tok).to(tl.int64) * stride_ot + head * stride_oh
        tl.store(o_ptr + o_rows[:, None] + d[None, :], o, mask=row_ok[:, None])
        l_rows = split * stride_ls + (q_start + tok).to(tl.int64) * stride_lt + head
        tl.store(lse_ptr + l_rows, lse, mask=row_ok)


def _merge(o: torch.Tensor, lse: torch.Tensor) -> torch.Tensor:
    """Partial outputs ``[splits, T, H, D]`` and their log-sum-exps ``[splits, T, H]`` -> the
    attention output ``[T, H, D]`` (float32): each split weighted by its share of the softmax mass."""
    if o.shape[0] == 1:
        return o[0]
    top = lse.max(dim=0).values
    w = torch.exp(lse - top)
    return (w[..., None] * o).sum(dim=0) / w.sum(dim=0)[..., None]


def supports(q: torch.Tensor, kv_cache: torch.Tensor) -> bool:
    """Shapes the kernel takes: power-of-two head dim (16 and up: ``tl.dot``'s minimum) and block
    size, a float32 or bf16 activation, and a pool in the activation dtype or int8."""
    head_dim, block_size = _attention.kv_head_dim(kv_cache), kv_cache.shape[3]
    return (q.dtype in runtime.ACTIVATION_DTYPES and head_dim >= 16 and head_dim & (head_dim - 1) == 0
            and block_size & (block_size - 1) == 0 and kv_cache.dtype in (q.dtype, torch.int8)
            and q.shape[1] % kv_cache.shape[2] == 0)


def default_splits(rows: int, kv_heads: int, span: int, decode_only: bool) -> int:
    """Key ranges per (row, KV head): enough programs to fill a GPU's ~132 SMs a few times over at
    small decode batches, at least 256 keys each; one for prefill and when interpreted."""
    if not decode_only or runtime.INTERPRETED:
        return 1
    want = ceil_div(4 * 132, max(1, rows * kv_heads))
    return max(1, min(want, ceil_div(span, 256), 64))


def paged_attention(
    q: torch.Tensor,
    kv_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    softcap: float | None = None,
    temperature_len: int = 0,
    num_splits: int | None = None,
) -> torch.Tensor:
    """``kernels.attention.paged_attention``'s contract: ``q [num_tokens, q_heads, head_dim]`` over
    each sequence's cached context -> the same shape and dtype, with Grok-2's length temperature
    when ``temperature_len`` > 0. Reads only device tensors and the metadata's host lists (for the
    grid), so a decode step replays from a CUDA graph."""
    if not supports(q, kv_cache):
        return _attention.paged_attention(q, kv_cache, meta, scale, softcap, temperature_len)
    num_tokens, q_heads, head_dim = q.shape
    kv_heads, block_size = kv_cache.shape[2], kv_cache.shape[3]
    group = q_heads // kv_heads
    group_pad = runtime.next_pow2(group)
    max_q = max(meta.query_lens_list, default=0)
    span = max(meta.seq_lens_list, default=0)
    if num_tokens == 0:
        return torch.empty_like(q)
    runtime.check_tensors(q, kv_cache, meta.block_tables)
    # rows per program: query tokens times the group's heads, at least 16 (tl.dot's minimum)
    rows = 16 if max_q == 1 else (32 if runtime.INTERPRETED else 64)
    block_q = max(1, rows // group_pad)
    block_n = runtime.interpreted_tile(span) if runtime.INTERPRETED else 64
    splits = num_splits or default_splits(meta.num_seqs, kv_heads, span, max_q == 1)
    keys_per_split = ceil_div(ceil_div(span, splits), block_n) * block_n
    q = q.contiguous()
    o = torch.empty(splits, num_tokens, q_heads, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(splits, num_tokens, q_heads, dtype=torch.float32, device=q.device)
    kv_int8 = kv_cache.dtype == torch.int8
    scales = kv_cache.view(torch.float32) if kv_int8 else kv_cache
    tables = meta.block_tables
    grid = (meta.num_seqs, ceil_div(max_q, block_q), kv_heads * splits)
    _attention_tile[grid](
        q, kv_cache, scales, tables, meta.seq_lens, meta.query_start_loc, o, lse,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        tables.stride(0), o.stride(0), o.stride(1), o.stride(2), lse.stride(0), lse.stride(1),
        float(scale), float(softcap or 1.0), int(temperature_len),
        1.0 / math.log2(temperature_len) if temperature_len > 0 else 1.0, keys_per_split, splits,
        GROUP=group, GROUP_PAD=group_pad, BLOCK_Q=block_q, BLOCK_N=block_n, HEAD_DIM=head_dim, PAGE=block_size,
        KV_INT8=kv_int8, HAS_CAP=softcap is not None,
        HAS_TEMP=temperature_len > 0, ACT_BF16=q.dtype == torch.bfloat16,
        LOW_DOT=runtime.low_precision_dot(q.dtype))
    return _merge(o, lse).to(q.dtype)
