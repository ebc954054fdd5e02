"""Device functions every grokd Triton kernel shares: the roundings and functions grokd's PyTorch
twins compute, written so that they give the same bits compiled and interpreted.

Why these are not Triton's own operations: under the interpreter (triton 3.9, CPU), a float32 to
bfloat16 cast truncates instead of rounding to nearest even, arithmetic on bf16 values gives NaN,
``tl.dot`` on bf16 tiles returns garbage and ``libdevice.tanh`` fails. So every kernel upcasts
what it loads to float32 at once, rounds to bf16 with integer operations on the float32 bits
(``round_bf16``: exact, identical on the GPU), and computes tanh from ``tl.sigmoid``.
``tests/kernels/triton/test_interpreter_workarounds.py`` fails once the interpreter is fixed, to
tell that these can go.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def round_bf16(x):
    """float32 ``x`` rounded to the nearest bfloat16 (ties to even), returned as float32: add
    ``0x7FFF`` plus the kept part's lowest bit to the bits, then clear the low 16. Finite inputs
    only (the kernels' products, sums and scales are)."""
    bits = x.to(tl.uint32, bitcast=True)
    lsb = (bits >> 16) & 1
    bits = ((bits + 0x7FFF + lsb) >> 16) << 16
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def tanh(x):
    """``tanh(x) = 2 sigmoid(2x) - 1``: within about 1e-7 of ``torch.tanh`` in float32. ``x`` is
    clamped to +-10 first (``tanh(10)`` is 1 in float32), so that ``exp`` never overflows."""
    x = tl.minimum(tl.maximum(x, -10.0), 10.0)
    return 2.0 * tl.sigmoid(2.0 * x) - 1.0


@triton.jit
def gelu_erf(x):
    """``0.5 x (1 + erf(x / sqrt(2)))``, torch's exact ``gelu`` (Grok-2's experts)."""
    return 0.5 * x * (1.0 + tl.math.erf(x * 0.7071067811865476))


@triton.jit
def gelu_tanh(x):
    """``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``, torch's ``gelu(approximate="tanh")``."""
    inner = 0.7978845608028654 * (x + 0.044715 * x * x * x)
    return 0.5 * x * (1.0 + tanh(inner))


@triton.jit
def load_weight_tile(w_ptr, s_ptr, k0, k_offs, n_offs, K, N, stride_k, stride_n, stride_sg, group_size,
                     QUANT: tl.constexpr, ROUND_W: tl.constexpr, SCALE_ROW: tl.constexpr):
    """The ``[BK, BN]`` tile of an effective weight ``W[k, n]`` (``x @ W`` order) as float32, zero
    outside ``K x N``. The strides place any layout: the Grok release's int8 ``[K, N]`` or a torch
    ``[N, K]`` tensor. ``QUANT``: int8 (or fp8 e4m3) values and bf16 scales ``[G, N]`` (row ``k`` uses scale row
    ``k // group_size``) make ``bf16(bf16(q) * scale)``, bit-equal to ``quant.GroupedInt8Weight
    .dequantize`` (the float32 product of an int8 and a bf16 is exact; one rounding follows).
    ``ROUND_W``: a plain weight in another dtype is rounded to bf16, as ``.to(bfloat16)`` does.
    ``SCALE_ROW``: the tile's rows ``k0 ..`` lie in one scale group (the group size is a multiple
    of the tile's), so one scale row is loaded and broadcast instead of a scale per element."""
    mask = (k_offs[:, None] < K) & (n_offs[None, :] < N)
    # no ``other=``: the interpreter cannot cast a fill value to fp8; the masked lanes are zeroed after
    w = tl.load(w_ptr + k_offs[:, None] * stride_k + n_offs[None, :] * stride_n, mask=mask)
    w = tl.where(mask, w.to(tl.float32), 0.0)
    if QUANT:
        if SCALE_ROW:
            s = tl.load(s_ptr + (k0 // group_size) * stride_sg + n_offs, mask=n_offs < N, other=0)[None, :]
        else:
            s = tl.load(s_ptr + (k_offs // group_size)[:, None] * stride_sg + n_offs[None, :], mask=mask, other=0)
        w = round_bf16(w * s.to(tl.float32))
    elif ROUND_W:
        w = round_bf16(w)
    return w


@triton.jit
def dot(a, b, acc, LOW: tl.constexpr):
    """``acc + a @ b`` in float32. ``LOW``: the operands hold bf16 values and go to ``tl.dot`` as
    bf16 (exact casts; tensor cores); else float32 products without TF32 (``ieee``)."""
    if LOW:
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    return tl.dot(a, b, acc, input_precision="ieee")
