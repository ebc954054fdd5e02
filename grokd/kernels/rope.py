"""Rotary position embedding on a step's new queries and keys, and the keys' and values' write
into the paged KV pool, as one op (``rope_write_kv``).

``rope_write_kv`` is the PyTorch reference: HF's half-split RoPE (``apply_rope``) in the activation
dtype, then ``kernels.attention.write_kv``. About a dozen small ops per layer, 40-60 µs at decode
batch sizes on the CPU. ``rope_write_kv_cpu`` does it in one call to a C kernel
(``kernels/csrc/rope_write_kv.c``, built by ``kernels.cpu_build``) with the same roundings.
"""

from __future__ import annotations

import torch

from grokd.kernels import cpu_build
from grokd.kernels.attention import kv_head_dim, write_kv
from grokd.kernels.metadata import AttentionMetadata

_FUNCTIONS = {  # (activation dtype, pool dtype) -> C function
    (torch.bfloat16, torch.bfloat16): "grokd_rope_write_kv_bf16",
    (torch.float32, torch.float32): "grokd_rope_write_kv_f32",
    (torch.bfloat16, torch.int8): "grokd_rope_write_kv_bf16_i8",
    (torch.float32, torch.int8): "grokd_rope_write_kv_f32_i8",
}


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [T, heads, head_dim]`` in the half-split layout, in ``x``'s dtype (HF's order:
    ``x * cos + rotate_half(x) * sin``). Queries and keys go through in one call."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return torch.addcmul(x * cos, rotated, sin)


def rope_write_kv(
    qkv: torch.Tensor, num_heads: int, num_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
    kv_cache: torch.Tensor, meta: AttentionMetadata,
) -> torch.Tensor:
    """``qkv [T, (heads + 2 kv_heads) * head_dim]`` (queries, keys, values) -> the rotated queries
    ``[T, heads, head_dim]``; the rotated keys and the values go to the tokens' KV slots. ``cos``
    and ``sin`` are ``[T, 1, head_dim]`` in the activation dtype. ``qkv`` may be overwritten."""
    t = qkv.shape[0]
    head_dim = kv_head_dim(kv_cache)
    qk = apply_rope(qkv[:, : (num_heads + num_kv_heads) * head_dim].view(t, num_heads + num_kv_heads, head_dim),
                    cos, sin)
    q, k = qk.split([num_heads, num_kv_heads], dim=1)
    v = qkv[:, (num_heads + num_kv_heads) * head_dim :].view(t, num_kv_heads, head_dim)
    write_kv(kv_cache, k, v, meta)
    return q


def rope_write_kv_cpu(
    qkv: torch.Tensor, num_heads: int, num_kv_heads: int, cos: torch.Tensor, sin: torch.Tensor,
    kv_cache: torch.Tensor, meta: AttentionMetadata,
) -> torch.Tensor:
    """``rope_write_kv`` through the C kernel when it takes the inputs (CPU, bf16 or float32
    activations, a pool of that dtype or int8, unit-stride rows, contiguous tables and pool), else
    the reference."""
    library = cpu_build.library()
    t = qkv.shape[0]
    _, num_blocks, kv_heads, block_size, _ = kv_cache.shape
    head_dim = kv_head_dim(kv_cache)
    function = _FUNCTIONS.get((qkv.dtype, kv_cache.dtype))
    if (library is None or qkv.device.type != "cpu" or function is None or kv_heads != num_kv_heads
            or not all(a.dtype == qkv.dtype for a in (cos, sin)) or qkv.stride(-1) != 1
            or not (cos.is_contiguous() and sin.is_contiguous() and kv_cache.is_contiguous())
            or meta.slot_mapping.dtype != torch.int64 or not meta.slot_mapping.is_contiguous()
            or meta.slot_mapping.shape[0] != t):
        return rope_write_kv(qkv, num_heads, num_kv_heads, cos, sin, kv_cache, meta)
    status = getattr(library.lib, function)(
        qkv.data_ptr(), t, qkv.stride(0), num_heads, num_kv_heads, head_dim, cos.data_ptr(), sin.data_ptr(),
        kv_cache.data_ptr(), num_blocks, block_size, meta.slot_mapping.data_ptr(), library.threads())
    if status != 0:  # a head size the kernel does not take: nothing was written
        return rope_write_kv(qkv, num_heads, num_kv_heads, cos, sin, kv_cache, meta)
    return qkv[:, : num_heads * head_dim].view(t, num_heads, head_dim)
