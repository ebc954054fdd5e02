"""RMSNorm as Llama computes it in Hugging Face transformers: normalise in float32, round to the
activation dtype, then multiply by the weight in that dtype.

``rms_norm`` is the PyTorch reference. It costs about 25 µs for one row, through a chain of small
ops: the upcast, the fused norm, the downcast and the multiply. A SmolLM2 decode step at batch 1
runs 61 of them. ``rms_norm_cpu`` does each row in one numba call (``kernels._numba_cpu``), about
12 µs, with bit-identical bf16 results. It is used for up to ``MAX_ROWS`` rows: beyond that, the
two-thread PyTorch ops are faster (benchmarks/RESULTS.md, session 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kernels import numba_cpu

MAX_ROWS = 8
_STORAGE = {torch.bfloat16: torch.uint16, torch.float32: torch.float32}


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``weight * round(x / rms(x))`` over the last dimension, in ``x``'s dtype."""
    normed = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * normed.to(x.dtype)


def rms_norm_cpu(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """``rms_norm``, through the numba kernel when it takes the input: at most ``MAX_ROWS``
    rows of a 2-D CPU tensor in bf16 or float32, with a weight of the same dtype."""
    if (x.dim() != 2 or x.shape[0] > MAX_ROWS or x.device.type != "cpu" or x.dtype not in _STORAGE
            or weight.dtype != x.dtype or not numba_cpu.available()):
        return rms_norm(x, weight, eps)
    storage = _STORAGE[x.dtype]
    out = torch.empty(x.shape, dtype=x.dtype)
    numba_cpu.compiled().rms_norm_kernel(x.view(storage).numpy(), weight.view(storage).numpy(), float(eps),
                                         x.dtype == torch.bfloat16, out.view(storage).numpy())
    return out
