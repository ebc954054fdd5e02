"""Projections ``x @ W.T``: the one op every model's linear layers call (``Kernels.linear``), and
the weight forms it runs on.

A weight is either a plain ``[out, in]`` tensor (a model's parameters before packing, and any
weight this machine packs no further), multiplied by ``F.linear`` in the weight's dtype, or a
``PackedWeight``: an object in some kernel's own layout whose ``linear(x)`` runs that kernel.
``pack_weight`` picks the form once, at load time, so a step never tests a weight's type beyond
tensor-or-not, and a new format is one class with a ``linear`` method plus a line in
``pack_weight``. The method is called ``linear`` (as ``F.linear``: ``x @ W.T``) and not ``matmul``,
which on a tensor means ``W @ x``: a plain tensor mistaken for a packed weight fails at once.

The forms:

- ``OneDNNWeight``. A plain ``F.linear`` on CPU reorders the bf16 weight into oneDNN's blocked
  format on *every* call; at decode batch sizes (1-32 rows) that reorder and the cache misses it
  causes cost more than the multiply itself (benchmarks/RESULTS.md#changelog).
  Packing at load time, as inductor's CPU "freezing" pass does, removes it: the packed weight is an
  opaque ``torch._mkldnn`` tensor consumed by ``torch.ops.mkldnn._linear_pointwise``. The products
  are bit-identical to ``F.linear`` (tests/kernels/test_linear.py), which stays the reference.
- ``cpu_linear.PanelWeight`` and ``cpu_linear.Int8PanelWeight``: the C kernels' panels, which
  ``pack_weight`` prefers wherever those kernels are built (every x86 tier from avx2 up).
- ``Int8Weight``, the opt-in weight-only int8 form (``--weights-dtype int8`` for dense models):
  int8 values with one scale per output row (``quantize_per_channel_int8``), multiplied by
  ``aten._weight_int8pack_mm`` with fp32 accumulation. It halves the bytes a decode step reads,
  which is what bounds batch-1 decode on CPU; its reference twin is ``per_channel_int8_reference``
  (dequantise, then ``F.linear``).
- ``quant.GroupedInt8Weight``: the Grok-1 release's int8 layout (input features first, one scale
  row per block of them); models wrap their stored int8 parameters in it to call the op.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from grokd.kernels import cpu_linear, cpu_tier, host_memory, quant

# oneDNN's packed path pays off for these storage dtypes on CPU; float32 would need MKL's packed
# GEMM, which keeps the original weight alongside (double the memory) for a small gain.
PACKABLE = (torch.bfloat16,)


@runtime_checkable
class PackedWeight(Protocol):
    """A projection weight in a kernel's own layout. ``linear(x)``: ``x [..., in]`` -> ``[..., out]``
    in ``x``'s dtype (cast in and back where the kernel takes another); ``nbytes()``: the bytes of
    weight a product reads."""

    def linear(self, x: torch.Tensor) -> torch.Tensor: ...

    def nbytes(self) -> int: ...


def linear(x: torch.Tensor, weight: torch.Tensor | PackedWeight) -> torch.Tensor:
    """``x @ weight.T`` in ``x``'s dtype: a packed weight runs its own kernel; a plain tensor
    ``[out, in]`` goes through ``F.linear`` in its own dtype (``x`` cast in, the result back)."""
    if not isinstance(weight, torch.Tensor):
        return weight.linear(x)
    if x.dtype != weight.dtype:
        return F.linear(x.to(weight.dtype), weight).to(x.dtype)
    return F.linear(x, weight)


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
) -> torch.Tensor | PackedWeight:
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


@dataclass(frozen=True)
class WeightPacker:
    """Packs one model's projections with ``pack_weight`` into one ``host_memory.Arena``, in the
    order they are given (give them in the order a step reads them), each quantised to an
    ``Int8Weight`` first when ``int8`` (``--weights-dtype int8``), with scales in ``dtype``, the
    activations' dtype."""

    int8: bool = False
    dtype: torch.dtype = torch.bfloat16
    arena: host_memory.Arena = field(default_factory=host_memory.Arena)

    def __call__(self, weight: torch.Tensor) -> torch.Tensor | PackedWeight:
        return pack_weight(quantize_per_channel_int8(weight, self.dtype) if self.int8 else weight, self.arena)


@dataclass(frozen=True)
class OneDNNWeight:
    """A bf16 ``[out, in]`` weight in oneDNN's blocked layout (``packed``, an opaque ``torch._mkldnn``
    tensor), multiplied by ``mkldnn._linear_pointwise``: bit-identical to ``F.linear`` on the original."""

    packed: torch.Tensor
    shape: torch.Size

    @property
    def dtype(self) -> torch.dtype:
        return self.packed.dtype

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:
            return self.linear(x.to(self.dtype)).to(x.dtype)
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")


def pack_onednn(weight: torch.Tensor, batch_hint: int = 1) -> OneDNNWeight | torch.Tensor:
    """``weight [out, in]`` in oneDNN's blocked layout, or ``weight`` unchanged when it cannot be
    packed. ``batch_hint`` only tunes the layout; any number of rows works afterwards."""
    if not can_pack(weight):
        return weight
    return OneDNNWeight(torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_hint), weight.shape)


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

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != self.dtype:
            return self.linear(x.to(self.dtype)).to(x.dtype)
        # torch's int8-pack kernel is CPU-only, and returns NaN or crashes when the input features
        # are not a multiple of 16 (torch 2.13): convert the weight per call there instead
        if x.device.type != "cpu" or self.shape[1] % 16:
            return F.linear(x, self.qweight.to(x.dtype)) * self.scales
        return torch.ops.aten._weight_int8pack_mm(x.contiguous(), self.qweight, self.scales)


def quantize_per_channel_int8(weight: torch.Tensor, dtype: torch.dtype) -> Int8Weight:
    """Symmetric int8 per output channel (row) of ``weight [out, in]``: ``kernels.quant.quantize_rows``
    (``scale = max|row| / 127``, values rounded to nearest), the scales then stored in ``dtype``."""
    q, scales = quant.quantize_rows(weight)
    return Int8Weight(q.contiguous(), scales.squeeze(-1).to(dtype))


def per_channel_int8_reference(x: torch.Tensor, weight: Int8Weight) -> torch.Tensor:
    """The twin ``Int8Weight`` and ``cpu_linear.Int8PanelWeight`` are tested against: dequantise in
    float32, multiply, round once."""
    w = weight.qweight.float() * weight.scales.float()[:, None]
    return F.linear(x.float(), w).to(x.dtype)
