"""RMSNorm as Llama computes it in Hugging Face transformers: normalise in float32, round to the
activation dtype, then multiply by the weight in that dtype.

``rms_norm`` is the PyTorch reference. It costs about 25 µs for one row, through a chain of small
ops: the upcast, the fused norm, the downcast and the multiply. A SmolLM2 decode step at batch 1
runs 61 of them. ``rms_norm_cpu`` does all rows in one call to a C kernel (``kernels/csrc/rms_norm.c``,
built by ``kernels.cpu_build``), with bit-identical bf16 results.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from grokd.kernels import cpu_build

_FUNCTIONS = {torch.bfloat16: "grokd_rms_norm_bf16", torch.float32: "grokd_rms_norm_f32"}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * round(x / rms(x))`` over the last dimension, in ``x``'s dtype."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``rms_norm``, through the C kernel when it takes the input: a 2-D CPU tensor in bf16 or
    float32 with unit-stride rows, and a contiguous weight of the same dtype."""
    library = cpu_build.library()
    if (x.dim() != 2 or x.device.type != "cpu" or x.dtype not in _FUNCTIONS or x.stride(-1) != 1
            or weight.dtype != x.dtype or not weight.is_contiguous() or library is None):
        return rms_norm(x, weight, eps)
    out = torch.empty(x.shape, dtype=x.dtype)
    getattr(library.lib, _FUNCTIONS[x.dtype])(x.data_ptr(), x.shape[0], x.shape[1], x.stride(0), weight.data_ptr(),
                                              float(eps), out.data_ptr(), library.threads())
    return out
