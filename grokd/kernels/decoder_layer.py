"""A whole pre-norm SwiGLU decoder layer (Llama's) for decode-only CPU steps, in one C call
(``kernels/csrc/decoder_layer.c``, built by ``kernels.cpu_build``).

Why: with every stage already a C kernel, a batch-1 decode step still spent about a hundred
microseconds per layer between them, in Python and op dispatch (benchmarks/RESULTS.md#changelog).
This chains the same kernels (RMSNorm, the AVX512-BF16 projections, RoPE with the KV write, paged
decode attention, SwiGLU, the residual adds) without coming back to Python. It takes a step only
when all of them would: bf16 activations over a bf16 or int8 KV pool, projections without biases
all panel-packed in bf16 or all in weight-only int8 (``--weights-dtype int8``), decode rows only;
otherwise ``decoder_layer_cpu`` returns ``None`` and the model runs its own ops, which are the twin
(tests/kernels/test_decoder_layer.py).

``DecoderStack`` goes one level up: every layer of the model, then its final RMSNorm, in one C call
per step, with the layers' argument structs built once when the weights are packed. Between
per-layer calls a batch-1 step still spent about a fifth of its time in Python, because that code runs
with the caches cold from the weights each layer has just streamed (benchmarks/RESULTS.md#cpu-decode-kernels).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import NamedTuple

import torch

from grokd.kernels import cpu_build
from grokd.kernels.attention import kv_head_dim
from grokd.kernels.c_abi import LayerWeights, StepKV
from grokd.kernels.cpu_linear import Int8PanelWeight, PanelWeight
from grokd.kernels.linear import PackedWeight
from grokd.kernels.metadata import AttentionMetadata


@dataclass(frozen=True)
class DenseLayerWeights:
    """What the fused layer reads from a model's layer: the two RMSNorm weights and the four
    projections (``qkv [(heads + 2 kv_heads) * head_dim, hidden]``, ``o``, ``gate_up [2 *
    intermediate, hidden]``, ``down``) in the forms ``kernels.linear.pack_weight`` gave them."""

    norm1: torch.Tensor
    norm2: torch.Tensor
    qkv: torch.Tensor | PackedWeight
    o: torch.Tensor | PackedWeight
    gate_up: torch.Tensor | PackedWeight
    down: torch.Tensor | PackedWeight
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    eps: float
    scale: float


def _layer_struct(w: DenseLayerWeights) -> LayerWeights | None:
    """``w`` as the C layer reads it, or ``None`` when the kernel cannot take this layer's weights:
    all four projections panel-packed in bf16 or all in weight-only int8 (one packing), bf16 norms."""
    projections = (w.qkv, w.o, w.gate_up, w.down)
    panels = [p for p in projections if isinstance(p, PanelWeight)]
    int8s = [p for p in projections if isinstance(p, Int8PanelWeight)]
    if len(panels) != len(projections) and len(int8s) != len(projections):
        return None
    if not (w.norm1.dtype == w.norm2.dtype == torch.bfloat16 and w.norm1.is_contiguous() and w.norm2.is_contiguous()
            and w.norm1.device.type == "cpu"):
        return None
    if int8s and len({p.vnni for p in int8s}) != 1:
        return None
    kind = (2 if int8s[0].vnni else 1) if int8s else 0  # LayerWeights.kind: 0 bf16 panels, 1 int8, 2 int8 for VNNI
    packed = panels or int8s
    scales = [p.scales.data_ptr() for p in int8s] if int8s else [None] * len(projections)
    return LayerWeights(w.norm1.data_ptr(), w.norm2.data_ptr(), *(p.packed.data_ptr() for p in packed), *scales,
                    w.norm1.shape[0], w.heads, w.kv_heads, w.head_dim, w.intermediate, w.eps, w.scale, kind)


def _step_struct(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                 meta: AttentionMetadata, kv_heads: int, head_dim: int) -> StepKV | None:
    """The step's arguments (``kv_cache`` as every layer's pool is shaped), or ``None`` when the
    kernel does not take this step: bf16 activations, decode rows only, a bf16 or int8 pool."""
    if (x.dtype != torch.bfloat16 or x.dim() != 2 or not x.is_contiguous() or x.device.type != "cpu"
            or kv_cache.dtype not in (torch.bfloat16, torch.int8) or not kv_cache.is_contiguous()
            or kv_cache.device.type != "cpu" or kv_cache.shape[2] != kv_heads or kv_head_dim(kv_cache) != head_dim
            or not (cos.dtype == sin.dtype == torch.bfloat16 and cos.is_contiguous() and sin.is_contiguous())):
        return None
    decode = meta.decode_rows
    if (decode is None or not decode.whole_batch or len(meta.query_lens_list) != x.shape[0]
            or meta.slot_mapping.dtype != torch.int64 or not meta.slot_mapping.is_contiguous()
            or decode.block_tables.stride(-1) != 1 or decode.block_tables.dtype != torch.int64
            or decode.seq_lens.dtype != torch.int64):
        return None
    return StepKV(cos.data_ptr(), sin.data_ptr(), kv_cache.data_ptr(), kv_cache.shape[1], kv_cache.shape[3],
                   meta.slot_mapping.data_ptr(), decode.block_tables.data_ptr(), decode.seq_lens.data_ptr(),
                   decode.block_tables.stride(0), decode.seq_lens.stride(0), kv_cache.dtype == torch.int8)


def decoder_layer_cpu(
    w: DenseLayerWeights, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
    meta: AttentionMetadata,
) -> torch.Tensor | None:
    """The layer's output for ``x [rows, hidden]`` (bf16), or ``None`` when this kernel does not
    take the step. Writes the rows' keys and values into ``kv_cache`` as the model's ops would."""
    library = cpu_build.library()
    if library is None or x.dim() != 2 or x.shape[1] != w.norm1.shape[0]:
        return None
    weights = _layer_struct(w)
    step = _step_struct(x, cos, sin, kv_cache, meta, w.kv_heads, w.head_dim)
    if weights is None or step is None:
        return None
    out = x.clone()
    if library.lib.grokd_decoder_layer_bf16(out.data_ptr(), x.shape[0], weights, step, library.threads()) != 0:
        return None  # a stage refused: the model's ops run instead (and rewrite the same KV slots)
    return out


class StackOutput(NamedTuple):
    """What ``DecoderStack`` did with a step: the residual stream after its first ``done`` layers,
    and, when it ran them all, the model's final RMSNorm of it (else ``None``)."""

    hidden: torch.Tensor
    done: int
    normed: torch.Tensor | None


class DecoderStack:
    """A model's whole stack of decoder layers, then its final RMSNorm, as one C call per decode
    step (``grokd_decoder_layers_bf16``). The layers' argument structs are built once, here, since
    packed weights never move; a step then costs one call instead of a module call, a weights
    record, the checks and two structs per layer (about 60 us each: 1.7 ms of a 9.7 ms batch-1 step
    of SmolLM2). Build it with ``build`` after the weights are packed."""

    def __init__(self, layers: list[DenseLayerWeights], structs: list[LayerWeights], final_norm: torch.Tensor | None,
                 eps: float) -> None:
        self._layers = layers  # keeps the tensors the structs point into alive
        self._final_norm, self._eps = final_norm, eps
        self._structs = (LayerWeights * len(structs))(*structs)
        self._kv_heads, self._head_dim, self._hidden = layers[0].kv_heads, layers[0].head_dim, layers[0].norm1.shape[0]
        # the last step's pools, checked, and their pointers: a model runner keeps the same pools for
        # its lifetime, so a step only compares identities (the checks are ~90 tensor queries, which
        # cost about 0.1 ms with the caches cold from the step's weights)
        self._pools: tuple[list[torch.Tensor], ctypes.Array] | None = None

    @classmethod
    def build(cls, layers: list[DenseLayerWeights], final_norm: torch.Tensor | None = None,
              eps: float = 1e-6) -> DecoderStack | None:
        """The stack (with the model's final norm, a bf16 weight, when given), or ``None`` when the
        kernels are not built or some layer's weights cannot be taken (the model then runs layer by
        layer)."""
        if not layers or cpu_build.library() is None:
            return None
        if final_norm is not None and (final_norm.dtype != torch.bfloat16 or not final_norm.is_contiguous()
                                       or final_norm.shape != layers[0].norm1.shape):
            final_norm = None
        structs = [s for w in layers if (s := _layer_struct(w)) is not None]
        first = layers[0]
        if len(structs) != len(layers) or any(
                (w.kv_heads, w.head_dim, w.norm1.shape[0]) != (first.kv_heads, first.head_dim, first.norm1.shape[0])
                for w in layers):
            return None
        return cls(layers, structs, final_norm, eps)

    def __call__(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_caches: list[torch.Tensor],
                 meta: AttentionMetadata) -> StackOutput | None:
        """What the stack did (``StackOutput``: all layers unless one refused, and the caller then
        runs the rest), or ``None`` when the kernel does not take this step. Writes each layer's keys
        and values into its pool as the model's ops would."""
        if len(kv_caches) != len(self._layers) or x.dim() != 2 or x.shape[1] != self._hidden:
            return None
        first = kv_caches[0]
        step = _step_struct(x, cos, sin, first, meta, self._kv_heads, self._head_dim)
        if step is None:
            return None
        pools = self._pools
        known = pools is not None and len(pools[0]) == len(kv_caches) and all(
            a is b for a, b in zip(pools[0], kv_caches, strict=True))
        if pools is None or not known:
            if any(c.shape != first.shape or c.dtype != first.dtype or not c.is_contiguous() for c in kv_caches):
                return None
            pools = (list(kv_caches), (ctypes.c_void_p * len(kv_caches))(*(c.data_ptr() for c in kv_caches)))
            self._pools = pools
        library = cpu_build.library()
        assert library is not None, "DecoderStack.build found the kernels built"
        out = x.clone()
        final_norm = self._final_norm
        normed = torch.empty_like(x) if final_norm is not None else None
        done = int(library.lib.grokd_decoder_layers_bf16(
            out.data_ptr(), x.shape[0], self._structs, pools[1], len(kv_caches), step,
            None if final_norm is None else final_norm.data_ptr(), self._eps,
            None if normed is None else normed.data_ptr(), library.threads()))
        return StackOutput(out, done, normed if done == len(kv_caches) else None)
