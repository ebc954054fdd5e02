"""The one place that picks kernel implementations for a device. Attention batches decode rows,
and the per-sequence reference stays in ``kernels.attention``. On the CPU, decode rows go through
the in-place C kernel (``kernels.cpu_decode_attention``) and RMSNorm through another
(``kernels.norm``), both built by ``kernels.cpu_build``; prefill rows go through torch's fused SDPA
(``kernels.prefill_attention``), and projections on the weight forms ``kernels.linear.pack_weight``
picks for the CPU (each form runs its own kernel). On CUDA, PyTorch ops are replayed from graphs
(``engine.decode_graphs``).

The kernel backend (``--kernel-backend``): ``torch`` is everything above; ``triton`` swaps in
grokd's Triton kernels (``kernels.triton``: paged attention, the fused MoE, the int8 weight-only
GEMM) for those three ops and leaves the rest to PyTorch; ``auto`` is ``triton`` on CUDA where
``triton`` imports, else ``torch``. Triton on CPU tensors means its interpreter
(``TRITON_INTERPRET=1``): slow, but how the kernels and the engine around them are tested without a
GPU."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from importlib.util import find_spec

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
from grokd.kernels.backends import check_kernel_backend


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
    # no op reads a device value on the host (the PyTorch MoE does, to count tokens per expert), so
    # a model's decode step can be captured in a CUDA graph
    sync_free: bool = False


def triton_importable() -> bool:
    return find_spec("triton") is not None


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """``torch`` or ``triton`` for ``backend`` on ``device`` (``auto``: triton on CUDA when
    importable); a ValueError for an unknown name or a Triton backend that cannot run."""
    check_kernel_backend(backend)
    dev = torch.device(device).type
    if backend == "auto":
        return "triton" if dev == "cuda" and triton_importable() else "torch"
    if backend == "triton" and not triton_importable():
        raise ValueError("kernel_backend triton: the triton package is not installed")
    return backend


def select_kernels(device: torch.device | str = "cpu", backend: str = "auto") -> Kernels:
    """Implementations for ``device`` and ``backend`` (``resolve_backend``). With ``torch``: on the
    CPU, decode attention, RMSNorm, RoPE with the KV write, the decode layer and the greedy argmax
    go through the C kernels when they could be built, and prefill attention through SDPA always;
    elsewhere PyTorch's ops. With ``triton``: ``triton_kernels``."""
    if resolve_backend(backend, device) == "triton":
        return triton_kernels(device)
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


def triton_kernels(device: torch.device | str) -> Kernels:
    """grokd's Triton kernels for attention, the MoE and the int8 projections, PyTorch for the
    rest. On the CPU they must be interpreted: ``TRITON_INTERPRET=1`` set before they are imported
    (``triton.jit`` reads it when a kernel is defined), else a ValueError says so."""
    from grokd.kernels.triton import fused_moe, int8_linear, paged_attention, runtime

    if torch.device(device).type == "cpu" and not runtime.INTERPRETED:
        raise ValueError("kernel_backend triton on the CPU runs Triton's interpreter: set TRITON_INTERPRET=1 "
                         "in the environment before grokd starts")
    return Kernels(attention=paged_attention.paged_attention, moe=fused_moe.fused_moe, linear=int8_linear.linear,
                   sync_free=True)
