"""A whole pre-norm SwiGLU decoder layer (Llama's) for decode-only CPU steps, in one C call
(``kernels/csrc/decoder_layer.c``, built by ``kernels.cpu_build``).

Why: with every stage already a C kernel, a batch-1 decode step still spent about a hundred
microseconds per layer between them, in Python and op dispatch (benchmarks/RESULTS.md, session 4).
This chains the same kernels (RMSNorm, the AVX512-BF16 projections, RoPE with the KV write, paged
decode attention, SwiGLU, the residual adds) without coming back to Python. It takes a step only
when all of them would: bf16 activations over a bf16 or int8 KV pool, projections without biases
all panel-packed in bf16 or all in weight-only int8 (``--weights-dtype int8``), decode rows only;
otherwise ``decoder_layer_cpu`` returns ``None`` and the model runs its own ops, which are the twin
(tests/kernels/test_decoder_layer.py).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from kernels import cpu_build
from kernels.attention import kv_head_dim
from kernels.cpu_linear import Int8PanelWeight, PanelWeight
from kernels.metadata import AttentionMetadata


@dataclass(frozen=True)
class DenseLayerWeights:
    """What the fused layer reads from a model's layer: the two RMSNorm weights and the four
    projections (``qkv [(heads + 2 kv_heads) * head_dim, hidden]``, ``o``, ``gate_up [2 *
    intermediate, hidden]``, ``down``) in the forms ``kernels.linear.pack_weight`` gave them."""

    norm1: torch.Tensor
    norm2: torch.Tensor
    qkv: object
    o: object
    gate_up: object
    down: object
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    scale: float


class _Weights(ctypes.Structure):
    _fields_ = [(n, ctypes.c_void_p) for n in ("norm1", "norm2", "qkv", "o", "gate_up", "down", "qkv_scales",
                                               "o_scales", "gate_up_scales", "down_scales")] + [
        (n, ctypes.c_int64) for n in ("hidden", "heads", "kv_heads", "head_dim", "intermediate")] + [
        ("eps", ctypes.c_float), ("scale", ctypes.c_float), ("kind", ctypes.c_int32)]


class _StepKV(ctypes.Structure):
    _fields_ = [("cos", ctypes.c_void_p), ("sin", ctypes.c_void_p), ("pool", ctypes.c_void_p),
                ("num_blocks", ctypes.c_int64), ("block_size", ctypes.c_int64),
                ("slots", ctypes.c_void_p), ("tables", ctypes.c_void_p), ("seq_lens", ctypes.c_void_p),
                ("table_stride", ctypes.c_int64), ("len_stride", ctypes.c_int64), ("pool_int8", ctypes.c_int32)]


def decoder_layer_cpu(
    w: DenseLayerWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
    meta: AttentionMetadata,
) -> torch.Tensor | None:
    """The layer's output for ``x [rows, hidden]`` (bf16), or ``None`` when this kernel does not
    take the step. Writes the rows' keys and values into ``kv_cache`` as the model's ops would."""
    library = cpu_build.library()
    rows = x.shape[0]
    projections = (w.qkv, w.o, w.gate_up, w.down)
    if (library is None or x.dtype != torch.bfloat16 or x.dim() != 2 or not x.is_contiguous()
            or x.device.type != "cpu" or kv_cache.dtype not in (torch.bfloat16, torch.int8)
            or not kv_cache.is_contiguous() or kv_cache.shape[2] != w.kv_heads or kv_head_dim(kv_cache) != w.head_dim
            or not (all(isinstance(p, PanelWeight) for p in projections)
                    or all(isinstance(p, Int8PanelWeight) for p in projections))
            or not (w.norm1.dtype == w.norm2.dtype == torch.bfloat16 and w.norm1.is_contiguous()
                    and w.norm2.is_contiguous())
            or not (cos.dtype == sin.dtype == torch.bfloat16 and cos.is_contiguous() and sin.is_contiguous())):
        return None
    decode = meta.decode_rows
    if (decode is None or not decode.whole_batch or len(meta.query_lens_list) != rows
            or meta.slot_mapping.dtype != torch.int64 or not meta.slot_mapping.is_contiguous()
            or decode.block_tables.stride(-1) != 1 or decode.block_tables.dtype != torch.int64
            or decode.seq_lens.dtype != torch.int64):
        return None
    int8 = isinstance(w.qkv, Int8PanelWeight)
    if int8 and len({p.vnni for p in projections}) != 1:
        return None
    kind = 2 if int8 and w.qkv.vnni else int(int8)  # LayerWeights.kind: 0 bf16 panels, 1 int8, 2 int8 for VNNI
    scales = [p.scales.data_ptr() if int8 else None for p in projections]
    out = x.clone()
    weights = _Weights(w.norm1.data_ptr(), w.norm2.data_ptr(), *(p.packed.data_ptr() for p in projections), *scales,
                       x.shape[1], w.heads, w.kv_heads, w.head_dim, w.intermediate, w.eps, w.scale, kind)
    step = _StepKV(cos.data_ptr(), sin.data_ptr(), kv_cache.data_ptr(), kv_cache.shape[1], kv_cache.shape[3],
                   meta.slot_mapping.data_ptr(), decode.block_tables.data_ptr(), decode.seq_lens.data_ptr(),
                   decode.block_tables.stride(0), decode.seq_lens.stride(0), kv_cache.dtype == torch.int8)
    if library.lib.grokd_decoder_layer_bf16(out.data_ptr(), rows, weights, step, library.threads()) != 0:
        return None  # a stage refused: the model's ops run instead (and rewrite the same KV slots)
    return out
