"""int8 weights in the Grok-1 release's grouped layout, and the symmetric int8 rounding of rows
that the per-channel weights (``kernels.linear``) and the int8 KV pool (``kernels.attention``) share.

Grouped layout (``GroupedInt8Weight``): int8 ``[*lead, K, N]`` in ``x @ W`` order (input features
first) with bf16 scales ``[*lead, G, N]``, one scale row per block of ``K / G`` input features. The
release computes its effective weight as ``bf16(int8 -> bf16 * scale)``; any other rounding (e.g.
dequantising in float32) changes expert routing and moves logits by whole units, so ``linear``
reproduces exactly that product and only then casts to the activation dtype.

fp8 (``quantize_grouped_fp8``, ``--weights-dtype fp8``, an opt-in): the same layout with float8
e4m3 values (``torch.float8_e4m3fn``) in place of the int8 ones, so every kernel that takes the
grouped layout takes it unchanged (an e4m3 value converts to bf16 exactly, as an int8 one does;
the effective weight is again ``bf16(bf16(values) * scales)``). It is lossy even from the
release's int8: e4m3 keeps 3 mantissa bits, so each weight moves by up to 1/16 of itself (about
2.6% relative error on Gaussian weights, against int8's 0.7%); RESULTS.md has the logit error
measured. Its byte count is int8's: it is for checkpoints and kernels that want e4m3.

Rows (``quantize_rows``): one float32 scale per row of the last dimension, ``max|row| / 127``, and
values divided by it unrounded. The per-output-channel weights and the KV rows are both this, along
the same axis; ``quantize_grouped_int8`` is not, since it rounds each scale to bf16 before dividing
(so that ``qweight * scales`` is the weight the release's own product would see).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0  # the largest finite e4m3fn value; the format has no infinity


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per row of ``x``'s last dimension: int8 values ``[..., n]`` and float32 scales
    ``[..., 1]``, ``x ≈ values * scales``. ``scale = max|row| / 127`` (1 for an all-zero row, whose
    values are all 0, so nothing divides by zero); ``values = round(x / scale)``, half to even.
    ``kernels/csrc/rope_write_kv.c`` quantizes KV rows with exactly these operations."""
    x = x.float()
    amax = x.abs().amax(dim=-1, keepdim=True)
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.round(x / scale).clamp_(-127, 127).to(torch.int8), scale


@dataclass(frozen=True)
class GroupedInt8Weight:
    """An int8 weight in the Grok-1 release's layout: ``qweight [*lead, K, N]`` int8 (or float8
    e4m3, see the module docstring), ``x @ W`` order, and bf16 ``scales [*lead, G, N]``; input row
    ``k`` uses scale row ``k // (K // G)``."""

    qweight: torch.Tensor
    scales: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        """The effective weight ``bf16(bf16(qweight) * scales)``, ``[*lead, K, N]``."""
        weight, scales = self.qweight, self.scales
        k, groups = weight.shape[-2], scales.shape[-2]
        if k % groups:
            raise ValueError(f"input dim {k} is not a multiple of the {groups} scale groups")
        w = weight.to(torch.bfloat16)
        if groups == 1:
            return w * scales.to(torch.bfloat16)
        lead, n = weight.shape[:-2], weight.shape[-1]
        w = w.view(*lead, groups, k // groups, n) * scales.to(torch.bfloat16).unsqueeze(-2)
        return w.view(*lead, k, n)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x [..., K] @ dequantize()`` -> ``[..., N]``, computed in ``x``'s dtype."""
        return x @ self.dequantize().to(x.dtype)

    def nbytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * self.scales.element_size()


def quantize_grouped_int8(w: torch.Tensor, groups: int = 1) -> GroupedInt8Weight:
    """Symmetric absmax int8 of ``w [*lead, K, N]`` (``x @ W`` order) in ``groups`` blocks of input
    features, with bf16 scales: the release's layout, for holding dense checkpoints in int8 memory
    (lossy, unlike the release's own int8 weights). Each scale is rounded to bf16 before the division."""
    k, n = w.shape[-2], w.shape[-1]
    lead = w.shape[:-2]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of {groups} groups")
    wf = w.float().reshape(*lead, groups, k // groups, n)
    scales = (wf.abs().amax(dim=-2) / 127.0).clamp_min(1e-12).to(torch.bfloat16)
    q = torch.round(wf / scales.float().unsqueeze(-2)).clamp(-127, 127).to(torch.int8)
    return GroupedInt8Weight(q.reshape(*lead, k, n), scales)


def quantize_grouped_fp8(w: torch.Tensor, groups: int = 1) -> GroupedInt8Weight:
    """float8 e4m3 of ``w [*lead, K, N]`` (``x @ W`` order) in ``groups`` blocks of input features,
    with bf16 scales ``max|block column| / 448`` (rounded to bf16 before the division, as in
    ``quantize_grouped_int8``), values rounded to the nearest e4m3 (ties to even) after clamping
    to +-448 (e4m3fn saturates to NaN, not infinity). Lossy."""
    k, n = w.shape[-2], w.shape[-1]
    lead = w.shape[:-2]
    if k % groups:
        raise ValueError(f"input dim {k} is not a multiple of {groups} groups")
    wf = w.float().reshape(*lead, groups, k // groups, n)
    scales = (wf.abs().amax(dim=-2) / FP8_MAX).clamp_min(1e-12).to(torch.bfloat16)
    q = (wf / scales.float().unsqueeze(-2)).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return GroupedInt8Weight(q.reshape(*lead, k, n), scales)
