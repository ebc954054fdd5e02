"""Dense ``x @ w.T`` with CPU weights reordered once into oneDNN's blocked layout.

A plain ``F.linear`` on CPU reorders the bf16 weight into oneDNN's blocked format on *every*
call; at decode batch sizes (1-32 rows) that reorder and the cache misses it causes cost more
than the multiply itself (benchmarks/RESULTS.md#changelog). Packing at load
time, as inductor's CPU "freezing" pass does, removes it: the packed weight is an opaque
``torch._mkldnn`` tensor consumed by ``torch.ops.mkldnn._linear_pointwise``. The products are
bit-identical to ``F.linear`` (tests/kernels/test_linear.py), which stays the reference. On CPUs
with AVX512-BF16, ``pack_weight`` prefers ``kernels.cpu_linear``'s panels, faster at decode batch
sizes (1-32 rows); ``pack_onednn`` is the oneDNN form either way.

``Int8Weight`` is the opt-in weight-only int8 form (``--weights-dtype int8`` for dense models):
int8 values with one scale per output row, multiplied by ``aten._weight_int8pack_mm`` with fp32
accumulation. It halves the bytes a decode step reads, which is what bounds batch-1 decode on
CPU; its reference twin is ``int8_linear_reference`` (dequantise, then ``F.linear``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from grokd.kernels import cpu_linear, cpu_tier, host_memory

# oneDNN's packed path pays off for these storage dtypes on CPU; float32 would need MKL's packed
# GEMM, which keeps the original weight alongside (double the memory) for a small gain.
PACKABLE = (torch.bfloat16,)


def can_pack(weight: torch.Tensor) -> bool:
    """Whether ``pack_onednn`` would reorder ``weight`` (CPU, 2-D, a packable dtype, oneDNN built, and
    a CPU tier where oneDNN has a bf16 GEMM: AVX-512 BW/VL/DQ; below it oneDNN refuses the reorder)."""
    return (
        weight.device.type == "cpu"
        and weight.dim() == 2
        and weight.dtype in PACKABLE
        and not weight.is_mkldnn
        and torch.backends.mkldnn.is_available()
        and cpu_tier.active().rank >= cpu_tier.BY_NAME["avx512"].rank
    )


def pack_weight(
    weight: torch.Tensor | Int8Weight, arena: host_memory.Arena | None = None
) -> torch.Tensor | Int8Weight | cpu_linear.PanelWeight | cpu_linear.Int8PanelWeight:
    """``weight [out, in]`` (dense, or ``Int8Weight``) in the fastest form for this machine:
    ``kernels.cpu_linear`` panels where those kernels take it (in ``arena``'s huge pages when given:
    pass one arena for all of a model's weights), else oneDNN's layout for dense weights, else
    unchanged."""
    if isinstance(weight, Int8Weight):
        if cpu_linear.supports_int8(weight.qweight, weight.scales):
            return cpu_linear.pack_int8(weight.qweight, weight.scales, arena)
        return weight
    if cpu_linear.supports_weight(weight):
        return cpu_linear.pack(weight, arena)
    return pack_onednn(weight)


def pack_onednn(weight: torch.Tensor, batch_hint: int = 1) -> torch.Tensor:
    """``weight [out, in]`` in oneDNN's blocked layout, or ``weight`` unchanged when it cannot be
    packed. ``batch_hint`` only tunes the layout; any number of rows works afterwards."""
    if not can_pack(weight):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_hint)


@dataclass(frozen=True)
class Int8Weight:
    """A ``[out, in]`` weight as int8 rows and per-row scales: ``weight ≈ qweight * scales[:, None]``."""

    qweight: torch.Tensor  # [out, in] int8
    scales: torch.Tensor  # [out], in the activation dtype

    @property
    def dtype(self) -> torch.dtype:
        return self.scales.dtype

    @property
    def shape(self) -> torch.Size:
        return self.qweight.shape

    def nbytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * self.scales.element_size()


def quantize_int8(weight: torch.Tensor, dtype: torch.dtype) -> Int8Weight:
    """Symmetric per-output-row int8: ``scale = max|row| / 127``, values rounded to nearest."""
    w = weight.float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=torch.finfo(torch.float32).tiny)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return Int8Weight(q.contiguous(), scales.to(dtype))


def int8_linear_reference(x: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """The twin ``Int8Weight`` is tested against: dequantise in float32, multiply, round once."""
    w = weight.qweight.float() * weight.scales.float()[:, None]
    return F.linear(x.float(), w).to(x.dtype)


def dense_linear(
    x: torch.Tensor, weight: torch.Tensor | Int8Weight | cpu_linear.PanelWeight | cpu_linear.Int8PanelWeight
) -> torch.Tensor:
    """``x @ weight.T`` in ``x``'s dtype; ``weight`` is dense, packed by ``pack_weight`` or an
    ``Int8Weight``, and may be stored in another dtype than the activations (cast in and back)."""
    if isinstance(weight, cpu_linear.PanelWeight | cpu_linear.Int8PanelWeight):
        run = cpu_linear.linear if isinstance(weight, cpu_linear.PanelWeight) else cpu_linear.linear_int8
        if x.dtype != weight.dtype:
            return run(x.to(weight.dtype), weight).to(x.dtype)
        return run(x, weight)
    if isinstance(weight, Int8Weight):
        if x.dtype != weight.dtype:
            return dense_linear(x.to(weight.dtype), weight).to(x.dtype)
        # torch's int8-pack kernel is CPU-only, and returns NaN or crashes when the input features
        # are not a multiple of 16 (torch 2.13): convert the weight per call there instead
        if x.device.type != "cpu" or weight.shape[1] % 16:
            return F.linear(x, weight.qweight.to(x.dtype)) * weight.scales
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), weight.qweight, weight.scales)
    if x.dtype != weight.dtype:
        return dense_linear(x.to(weight.dtype), weight).to(x.dtype)
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return F.linear(x, weight)
