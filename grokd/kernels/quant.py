"""int8 weight-only quantisation as in the Grok-1 release: int8 weights with bf16 scales.

The release computes its effective weight as ``bf16(int8 -> bf16 * scale)``; any other rounding
(e.g. dequantising in float32) changes expert routing and moves logits by whole units, so the
reference here reproduces exactly that product and only then casts to the activation dtype.
"""

from __future__ import annotations

import torch


def dequantize(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``bf16(weight * scales)`` for ``weight [*lead, K, N]`` int8 and ``scales [*lead, G, N]``.

    Row ``k`` uses scale row ``k // (K // G)`` (per-block scales along the input dimension).
    """
    k, groups = weight.shape[-2], scales.shape[-2]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of the {groups} scale groups")
    w = weight.to(torch.bfloat16)
    if groups == 1:
        return w * scales.to(torch.bfloat16)
    lead = weight.shape[:-2]
    n = weight.shape[-1]
    w = w.view(*lead, groups, k // groups, n) * scales.to(torch.bfloat16).unsqueeze(-2)
    return w.view(*lead, k, n)


def int8_linear(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``x @ bf16(weight * scales)`` computed in ``x``'s dtype; ``weight [K, N]`` int8, ``scales [G, N]``."""
    return x @ dequantize(weight, scales).to(x.dtype)


def quantize_int8(w: torch.Tensor, groups: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric absmax quantisation of ``w [*lead, K, N]`` (``x @ W`` layout) to int8 + bf16 scales.

    For holding dense checkpoints in int8 memory; lossy, unlike the release's own int8 weights.
    """
    k, n = w.shape[-2], w.shape[-1]
    lead = w.shape[:-2]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of {groups} groups")
    wf = w.float().reshape(*lead, groups, k // groups, n)
    scales = (wf.abs().amax(dim=-2) / 127.0).clamp_min(1e-12).to(torch.bfloat16)
    q = torch.round(wf / scales.float().unsqueeze(-2)).clamp(-127, 127).to(torch.int8)
    return q.reshape(*lead, k, n), scales
