"""The numba-compiled CPU kernels, imported lazily through ``kernels.numba_cpu``: importing this
module compiles them, or loads numba's on-disk cache of them. The decode attention kernel is
described in ``kernels.cpu_decode_attention`` (twin: ``kernels.attention.paged_attention``), the
RMSNorm kernel in ``kernels.norm`` (twin: ``kernels.norm.rms_norm``)."""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_I32 = ir.IntType(32)


@intrinsic
def as_f32(typingctx, x):
    """bf16 bits (uint16) or float32 -> float32 (a shift and a bit cast; no rounding)."""
    if x == types.uint16:
        def widen(context, builder, sig, args):
            bits = builder.shl(builder.zext(args[0], _I32), ir.Constant(_I32, 16))
            return builder.bitcast(bits, ir.FloatType())
        return types.float32(x), widen
    if x == types.float32:
        return types.float32(x), lambda context, builder, sig, args: args[0]
    return None


@intrinsic
def round_bf16(typingctx, x):
    """float32 rounded to the nearest bf16 (ties to even), returned as float32."""
    def codegen(context, builder, sig, args):
        bits = builder.bitcast(args[0], _I32)
        lsb = builder.and_(builder.lshr(bits, ir.Constant(_I32, 16)), ir.Constant(_I32, 1))
        bits = builder.add(bits, builder.add(ir.Constant(_I32, 0x7FFF), lsb))
        bits = builder.and_(bits, ir.Constant(_I32, 0xFFFF0000))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.float32), codegen


@intrinsic
def to_storage(typingctx, x, like):
    """float32 -> the storage type of ``like``: bf16 bits (uint16, rounded to nearest even) or
    float32 unchanged."""
    if like == types.uint16:
        def narrow(context, builder, sig, args):
            bits = builder.bitcast(args[0], _I32)
            lsb = builder.and_(builder.lshr(bits, ir.Constant(_I32, 16)), ir.Constant(_I32, 1))
            bits = builder.add(bits, builder.add(ir.Constant(_I32, 0x7FFF), lsb))
            return builder.trunc(builder.lshr(bits, ir.Constant(_I32, 16)), ir.IntType(16))
        return types.uint16(types.float32, like), narrow
    if like == types.float32:
        return types.float32(types.float32, like), lambda context, builder, sig, args: args[0]
    return None


_NORM_SIGNATURES = [
    types.void(types.Array(elem, 2, "A"), types.Array(elem, 1, "A"), types.float64, types.boolean,
               types.Array(elem, 2, "C"))
    for elem in (types.uint16, types.float32)
]


@njit(_NORM_SIGNATURES, cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract", "nsz"})
def rms_norm_kernel(x, weight, eps, bf16, out):  # pragma: no cover (compiled)
    """``out = weight * round(x * rsqrt(mean(x^2) + eps))`` per row, in float32, with the rounding
    to bf16 before the weight when ``bf16`` (HF's order)."""
    rows, dim = x.shape
    for t in range(rows):
        total = np.float32(0.0)
        for d in range(dim):
            v = as_f32(x[t, d])
            total += v * v
        inv = np.float32(1.0) / np.sqrt(total / np.float32(dim) + np.float32(eps))
        for d in range(dim):
            n = as_f32(x[t, d]) * inv
            if bf16:
                n = round_bf16(n)
            out[t, d] = to_storage(as_f32(weight[d]) * n, out[t, d])


# the pool and the output are contiguous; q, the tables and the lengths may be strided views
_SIGNATURES = [
    types.void(types.Array(elem, 3, "A"), types.Array(elem, 5, "C"), types.Array(types.int64, 2, "A"),
               types.Array(types.int64, 1, "A"), types.float64, types.float64, types.boolean,
               types.Array(types.float32, 3, "C"))
    for elem in (types.uint16, types.float32)
]


@njit(inline="always")
def load_block(pool, kv, block, head, remaining, blk):  # pragma: no cover (compiled)
    """Widen one head's rows of one block (keys: ``kv`` 0, values: 1) into ``blk`` as float32;
    returns how many rows hold context (the last block of a sequence may be partly filled)."""
    rows = pool[kv, block, head]
    n = min(rows.shape[0], remaining)
    for r in range(n):
        for d in range(rows.shape[1]):
            blk[r, d] = as_f32(rows[r, d])
    return n


# no 'ninf'/'nnan' fast-math: the running maximum starts at -inf
@njit(_SIGNATURES, cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract", "nsz"})
def decode_attention_kernel(q, pool, tables, seq_lens, scale, softcap, bf16, out):  # pragma: no cover
    """``out[b, h] = softmax(scale * q[b, h] . K_b) . V_b`` for each decode row ``b``, reading row
    ``b``'s keys and values through ``tables[b]`` from ``pool [2, blocks, kv_heads, block_size,
    head_dim]`` in place. ``bf16`` applies the bf16 roundings of the reference."""
    rows, q_heads, head_dim = q.shape
    kv_heads, block_size = pool.shape[2], pool.shape[3]
    group = q_heads // kv_heads
    sc, cap = np.float32(scale), np.float32(softcap)  # keep the softmax loop in float32
    longest = 0
    for b in range(rows):
        longest = max(longest, seq_lens[b])
    scores = np.empty((group, longest), np.float32)
    acc = np.empty((group, head_dim), np.float32)
    qf = np.empty((group, head_dim), np.float32)
    blk = np.empty((block_size, head_dim), np.float32)
    for b in range(rows):
        length = seq_lens[b]
        n_blocks = (length + block_size - 1) // block_size
        for h in range(kv_heads):
            for g in range(group):
                for d in range(head_dim):
                    qf[g, d] = as_f32(q[b, h * group + g, d])
            for j in range(n_blocks):  # scores = q . k, block by block
                n = load_block(pool, 0, tables[b, j], h, length - j * block_size, blk)
                for g in range(group):
                    for r in range(n):
                        dot = np.float32(0.0)
                        for d in range(head_dim):
                            dot += qf[g, d] * blk[r, d]
                        scores[g, j * block_size + r] = dot
            for g in range(group):  # scale, soft-cap, softmax
                top = np.float32(-np.inf)
                for t in range(length):
                    s = round_bf16(scores[g, t]) if bf16 else scores[g, t]
                    s *= sc
                    if cap > 0:
                        s = cap * np.tanh(s / cap)
                    scores[g, t] = s
                    top = max(top, s)
                total = np.float32(0.0)
                for t in range(length):
                    e = np.exp(scores[g, t] - top)
                    scores[g, t] = e
                    total += e
                inv = np.float32(1.0) / total
                for t in range(length):
                    p = scores[g, t] * inv
                    scores[g, t] = round_bf16(p) if bf16 else p
                for d in range(head_dim):
                    acc[g, d] = 0.0
            for j in range(n_blocks):  # out = p . v
                n = load_block(pool, 1, tables[b, j], h, length - j * block_size, blk)
                for g in range(group):
                    for r in range(n):
                        p = scores[g, j * block_size + r]
                        for d in range(head_dim):
                            acc[g, d] += p * blk[r, d]
            for g in range(group):
                for d in range(head_dim):
                    out[b, h * group + g, d] = acc[g, d]
