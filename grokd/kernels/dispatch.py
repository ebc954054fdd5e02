"""The one place that picks kernel implementations for a device. Attention batches decode rows,
and the per-sequence reference stays in ``kernels.attention``. On the CPU, decode rows go through
the in-place C kernel (``kernels.cpu_decode_attention``) and RMSNorm through another
(``kernels.norm``), both built by ``kernels.cpu_build``; prefill rows go through torch's fused SDPA
(``kernels.prefill_attention``), and projections on the weight forms ``kernels.linear.pack_weight``
picks for the CPU (each form runs its own kernel). On CUDA, PyTorch ops are replayed from graphs
(``engine.decode_graphs``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from grokd.kernels import argmax as _argmax
from grokd.kernels import attention as _attention
from grokd.kernels import batched_attention as _batched_attention
from grokd.kernels import cpu_build as _cpu_build
from grokd.kernels import cpu_decode_attention as _cpu_decode
from grokd.kernels import decoder_layer as _decoder_layer
from grokd.kernels import linear as _linear
from grokd.kernels import moe as _moe
from grokd.kernels import norm as _norm
from grokd.kernels import prefill_attention as _prefill_attention
from grokd.kernels import quant as _quant
from grokd.kernels import rope as _rope


@dataclass(frozen=True)
class Kernels:
    """Ops a model calls; models receive this instead of importing implementations directly."""

    attention: Callable = _batched_attention.paged_attention_batched
    write_kv: Callable = _attention.write_kv
    rope_write_kv: Callable = _rope.rope_write_kv
    moe: Callable = _moe.moe_forward
    # ``x @ W.T`` for a plain ``[out, in]`` tensor or any ``kernels.linear.PackedWeight`` (the
    # per-channel int8, panel and oneDNN forms, the Grok release's ``quant.GroupedInt8Weight``)
    linear: Callable = _linear.linear
    # load time: a packer putting one model's projections into this device's fastest forms, and the
    # quantiser of dense weights to the Grok release's grouped int8 layout
    weight_packer: Callable[..., _linear.WeightPacker] = _linear.WeightPacker
    quantize_grouped_int8: Callable = _quant.quantize_grouped_int8
    rms_norm: Callable = _norm.rms_norm
    argmax: Callable = _argmax.argmax  # greedy decoding, per row of the logits
    # a whole decoder layer in one call for the steps it takes (returns None for the others)
    decoder_layer: Callable | None = None
    # builds a model's whole stack of such layers as one call per step (returns None if it cannot)
    decoder_stack: Callable | None = None


def select_kernels(device: torch.device | str = "cpu") -> Kernels:
    """Implementations for ``device``. Fast GPU kernels register here once they exist; on the
    CPU, decode attention, RMSNorm, RoPE with the KV write, the decode layer and the greedy argmax
    go through the C kernels when they could be built, and prefill attention through SDPA always."""
    if torch.device(device).type != "cpu":
        return Kernels()
    prefill = _prefill_attention.paged_prefill_attention  # torch's own fused kernel: needs no C build
    if not _cpu_build.available():
        return Kernels(attention=partial(_batched_attention.paged_attention_batched, prefill=prefill))
    return Kernels(attention=partial(_batched_attention.paged_attention_batched,
                                     decode=_cpu_decode.decode_attention_or_batched, prefill=prefill),
                   rms_norm=_norm.rms_norm_cpu, rope_write_kv=_rope.rope_write_kv_cpu,
                   decoder_layer=_decoder_layer.decoder_layer_cpu,
                   decoder_stack=_decoder_layer.DecoderStack.build, argmax=_argmax.argmax_cpu)
