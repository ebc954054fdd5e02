"""Weight-only int8 GEMM for the Grok release's grouped layout (``quant.GroupedInt8Weight``, also
holding fp8 e4m3 values under ``--weights-dtype fp8``), and
the per-output-channel int8 form of dense models (``linear.Int8Weight``).

The PyTorch twins (``GroupedInt8Weight.linear``, ``Int8Weight.linear``) turn the whole weight into
the activation dtype on every call: on a GPU that writes and reads back twice the int8 bytes, per
projection and step. Here each program dequantises only the ``[BK, BN]`` tiles it multiplies, in
registers (``numerics.load_weight_tile``: ``bf16(bf16(q) * scale)``, the release's rounding), so
the weight is read once, as int8. The per-channel form scales after the product, as its twin does
(``F.linear(x, q) * scales``, each rounded to the activation dtype).

Numerics: float32 accumulation; with bf16 activations the product is rounded to bf16 once, as the
twin's bf16 matmul does (the order of the float32 additions differs, nothing else).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from grokd.kernels import linear as _linear
from grokd.kernels.quant import GroupedInt8Weight
from grokd.kernels.triton import runtime
from grokd.kernels.triton.numerics import dot, load_weight_tile, round_bf16


@triton.jit
def _int8_matmul(x_ptr, w_ptr, s_ptr, out_ptr, M, K, N,
                 stride_xm, stride_wk, stride_wn, stride_sg, group_size, stride_om,
                 GROUPED: tl.constexpr, SCALE_ROW: tl.constexpr, SCALE_AFTER: tl.constexpr, ACT_BF16: tl.constexpr, LOW_DOT: tl.constexpr,
                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """``out[M, N] = x[M, K] @ W``: grouped scales inside the tile (``SCALE_AFTER`` false), or
    one scale per output column applied to the rounded product (``SCALE_AFTER``)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    m_offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    n_offs = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_offs = k0 + tl.arange(0, BLOCK_K)
        x = tl.load(x_ptr + m_offs[:, None].to(tl.int64) * stride_xm + k_offs[None, :],
                    mask=(m_offs[:, None] < M) & (k_offs[None, :] < K), other=0).to(tl.float32)
        w = load_weight_tile(w_ptr, s_ptr, k0, k_offs, n_offs, K, N, stride_wk, stride_wn, stride_sg, group_size,
                             QUANT=GROUPED, ROUND_W=False, SCALE_ROW=SCALE_ROW)
        acc = dot(x, w, acc, LOW_DOT)
    if ACT_BF16:
        acc = round_bf16(acc)
    if SCALE_AFTER:
        s = tl.load(s_ptr + n_offs, mask=n_offs < N, other=0).to(tl.float32)
        acc = acc * s[None, :]
        if ACT_BF16:
            acc = round_bf16(acc)
    out_mask = (m_offs[:, None] < M) & (n_offs[None, :] < N)
    tl.store(out_ptr + m_offs[:, None].to(tl.int64) * stride_om + n_offs[None, :],
             acc.to(out_ptr.dtype.element_ty), mask=out_mask)


def _blocks(m: int, k: int, n: int) -> tuple[int, int, int]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K)``: decode-sized rows on the GPU; wide tiles when interpreted
    (``runtime.interpreted_tile``)."""
    if runtime.INTERPRETED:
        return 16, runtime.interpreted_tile(n), runtime.interpreted_tile(k)
    return (16 if m <= 16 else 32 if m <= 32 else 64), 128, 64


def _launch(x: torch.Tensor, w: torch.Tensor, s: torch.Tensor, k: int, n: int, stride_wk: int, stride_wn: int,
            stride_sg: int, group_size: int, scale_after: bool) -> torch.Tensor:
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k).contiguous()
    m = x2.shape[0]
    out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return out.view(*lead, n)
    runtime.check_tensors(x2, w, s)
    bm, bn, bk = _blocks(m, k, n)
    grid = (triton.cdiv(m, bm), triton.cdiv(n, bn))
    _int8_matmul[grid](x2, w, s, out, m, k, n, x2.stride(0), stride_wk, stride_wn, stride_sg, group_size,
                       out.stride(0), GROUPED=not scale_after,
                       SCALE_ROW=group_size % bk == 0, SCALE_AFTER=scale_after, ACT_BF16=x.dtype == torch.bfloat16,
                       LOW_DOT=runtime.low_precision_dot(x.dtype), BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk)
    return out.view(*lead, n)


def grouped_int8_linear(x: torch.Tensor, weight: GroupedInt8Weight) -> torch.Tensor:
    """``GroupedInt8Weight.linear``'s contract: ``x [..., K] @ dequantize()`` -> ``[..., N]`` in
    ``x``'s dtype, for a 2-D weight ``[K, N]`` with scales ``[G, N]``."""
    q, s = weight.qweight, weight.scales
    k, n = q.shape
    groups = s.shape[0]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of the {groups} scale groups")
    q, s = q.contiguous(), s.contiguous()
    return _launch(x, q, s, k, n, q.stride(0), q.stride(1), s.stride(0), k // groups, scale_after=False)


def per_channel_int8_linear(x: torch.Tensor, weight: _linear.Int8Weight) -> torch.Tensor:
    """``linear.Int8Weight.linear``'s contract on a GPU: ``x @ q.T`` rounded to the activation
    dtype, times the per-row scales (``qweight [N, K]`` int8, ``scales [N]``)."""
    if x.dtype != weight.dtype:
        return per_channel_int8_linear(x.to(weight.dtype), weight).to(x.dtype)
    q = weight.qweight.contiguous()
    n, k = q.shape
    return _launch(x, q, weight.scales.contiguous(), k, n, q.stride(1), q.stride(0), 0, k, scale_after=True)


def supports(x: torch.Tensor) -> bool:
    return x.dtype in runtime.ACTIVATION_DTYPES


def linear(x: torch.Tensor, weight: torch.Tensor | _linear.PackedWeight) -> torch.Tensor:
    """``kernels.linear.linear``'s contract: the int8 forms through the kernel above, a plain
    tensor (cuBLAS is hard to beat there) and anything else through the PyTorch op."""
    if supports(x) and weight.__class__ is GroupedInt8Weight:
        assert isinstance(weight, GroupedInt8Weight)
        if weight.qweight.dim() == 2 and runtime.loads_weights(weight.qweight):
            return grouped_int8_linear(x, weight)
    if supports(x) and isinstance(weight, _linear.Int8Weight) and weight.dtype in runtime.ACTIVATION_DTYPES:
        return per_channel_int8_linear(x, weight)
    return _linear.linear(x, weight)


def dequantize(weight: GroupedInt8Weight) -> torch.Tensor:
    """The effective weight the kernels multiply, as float32 ``[K, N]``, computed by the same
    device function they use (the tests compare it with ``GroupedInt8Weight.dequantize``)."""
    q, s = weight.qweight.contiguous(), weight.scales.contiguous()
    k, n = q.shape
    out = torch.empty(k, n, dtype=torch.float32, device=q.device)
    runtime.check_tensors(q, s)
    grid = (triton.cdiv(k, 32), triton.cdiv(n, 32))
    _dequant_tiles[grid](q, s, out, k, n, q.stride(0), s.stride(0), k // s.shape[0], BLOCK_K=32, BLOCK_N=32)
    return out


@triton.jit
def _dequant_tiles(w_ptr, s_ptr, out_ptr, K, N, stride_wk, stride_sg, group_size,
                   BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr):
    k_offs = tl.program_id(0) * BLOCK_K + tl.arange(0, BLOCK_K)
    n_offs = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    w = load_weight_tile(w_ptr, s_ptr, 0, k_offs, n_offs, K, N, stride_wk, 1, stride_sg, group_size,
                         QUANT=True, ROUND_W=False, SCALE_ROW=False)
    tl.store(out_ptr + k_offs[:, None] * N + n_offs[None, :], w,
             mask=(k_offs[:, None] < K) & (n_offs[None, :] < N))
