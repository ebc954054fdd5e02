"""bf16 and weight-only int8 projections through the C micro-kernels in ``kernels/csrc/linear.c``
(built per CPU tier by ``kernels.cpu_build``): on every x86 tier from ``avx2`` up (``kernels.cpu_tier``).

Why: at decode batch sizes oneDNN's packed bf16 GEMM (``kernels.linear``) leaves speed behind: at
one row it streams the weights slower than the machine's two threads can read them, where this
kernel reaches that bandwidth, and it is slower at 16 rows too; from 256 rows on both sit at the
compute roof (benchmarks/RESULTS.md#cpu-projections). The weights are packed once, at load,
into panels of 16 output columns by pairs of input features (``PanelWeight``), the operand layout
of ``vdpbf16ps``; the kernel keeps a 32-column by 8-row tile of float32 sums in registers and
splits column groups across torch's OpenMP threads. Its twin is ``F.linear`` on the unpacked
weight (tests/kernels/test_cpu_linear.py): float32 sums of exact products, rounded once to bf16,
so the two differ only in summation order.

``Int8PanelWeight`` is the same idea for ``--weights-dtype int8``: int8 panels ``[out / 16, in, 16]``
widened to float32 in registers, one scale per output applied to each finished sum. A decode step
then reads one byte per weight. ``aten._weight_int8pack_mm``, which it replaces, was slower than the
bf16 kernel (10.1 against 8.0 ms per pass over the weights at one row; this one: 7.0) and gets
``in_features % 16 != 0`` wrong. Twin: ``kernels.linear.per_channel_int8_reference``.

On a CPU with AVX512-VNNI the int8 weights are packed in pairs for ``vpdpwssd`` instead (``vnni``),
and the bf16 activations converted to int16 per block of 128 features (finer than bf16 itself):
exact int32 sums of 32 products per instruction, with one widening per 32 weights, where the
kernel above widens and converts each weight. The same twin.

On the ``avx2`` tier (no AVX512-BF16; oneDNN has no bf16 GEMM there at all) both packings are the
same and the kernels widen them to float32 in 256-bit registers: a bf16 pair per 32-bit lane splits
into two float32 weights with one shift and one mask, an int8 weight with a sign extension and a
conversion, then float32 fused multiply-adds. The bytes read stay two (bf16) or one (int8) per
weight, so decode stays bound by memory bandwidth as on the AVX-512 tiers. The same twins.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokd.kernels import cpu_build, host_memory

PANEL = 16  # output columns per packed panel
GROUP = 2 * PANEL  # output columns per kernel tile: ``out_features`` must be a multiple


@dataclass(frozen=True)
class PanelWeight:
    """A bf16 ``[out, in]`` weight as ``packed [out / 16, in / 2, 16, 2]``:
    ``packed[p, kp, i, j] = weight[16 p + i, 2 kp + j]``."""

    packed: torch.Tensor
    shape: torch.Size

    @property
    def dtype(self) -> torch.dtype:
        return self.packed.dtype

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size()

    def unpack(self) -> torch.Tensor:
        """The ``[out, in]`` weight back (for tests and tools; the kernel never needs it)."""
        out_features, in_features = self.shape
        return self.packed.permute(0, 2, 1, 3).reshape(out_features, in_features)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T`` through ``linear_bf16``, in ``x``'s dtype (cast to bf16 and back)."""
        if x.dtype != self.dtype:
            return linear_bf16(x.to(self.dtype), self).to(x.dtype)
        return linear_bf16(x, self)


@dataclass(frozen=True)
class Int8PanelWeight:
    """Weight-only int8 ``[out, in]`` and float32 ``scales [out]``: ``weight ≈ qweight * scales[:, None]``.
    ``packed`` is ``[out / 16, in, 16]`` (``packed[p, k, i] = qweight[16 p + i, k]``), or with ``vnni``
    (for ``vpdpwssd``) ``[out / 16, kp / 2, 16, 2]`` (``packed[p, k2, i, j] = qweight[16 p + i,
    2 k2 + j]``), ``kp`` the input features rounded up to even with a zero weight."""

    packed: torch.Tensor
    scales: torch.Tensor
    shape: torch.Size
    dtype: torch.dtype = torch.bfloat16  # the activations it takes and returns
    vnni: bool = False

    @property
    def device(self) -> torch.device:
        return self.packed.device

    def nbytes(self) -> int:
        return self.packed.numel() + self.scales.numel() * self.scales.element_size()

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ (qweight * scales[:, None]).T`` through ``linear_int8``, in ``x``'s dtype (cast to
        bf16 and back)."""
        if x.dtype != self.dtype:
            return linear_int8(x.to(self.dtype), self).to(x.dtype)
        return linear_int8(x, self)


def _has_kernel(name: str = "grokd_linear_bf16_available") -> bool:
    library = cpu_build.library()
    return library is not None and bool(getattr(library.lib, name)())


def supports_weight(weight: torch.Tensor) -> bool:
    """Whether ``pack`` takes ``weight``: a 2-D bf16 CPU tensor with an even number of input
    features and a multiple of 32 outputs, on a CPU tier whose build has the kernel (avx2 and up)."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.device.type == "cpu"
        and weight.dim() == 2
        and weight.dtype == torch.bfloat16
        and not weight.is_mkldnn
        and weight.shape[0] % GROUP == 0
        and weight.shape[1] % 2 == 0
        and _has_kernel()
    )


def supports_int8(qweight: torch.Tensor, scales: torch.Tensor) -> bool:
    """Whether ``pack_int8`` takes a weight-only int8 weight: a 2-D CPU int8 tensor with a
    multiple of 32 outputs and bf16 scales (bf16 activations), on a CPU tier with the kernel (avx2 and up)."""
    return (
        qweight.device.type == "cpu"
        and qweight.dim() == 2
        and qweight.dtype == torch.int8
        and qweight.shape[0] % GROUP == 0
        and scales.dtype == torch.bfloat16
        and scales.shape == qweight.shape[:1]
        and _has_kernel("grokd_linear_int8_available")
    )


def supports_vnni() -> bool:
    """Whether this build has the AVX512-VNNI int8 kernel (``Int8PanelWeight.vnni``)."""
    return _has_kernel("grokd_linear_int8_vnni_available")


def pack_int8(qweight: torch.Tensor, scales: torch.Tensor, arena: host_memory.Arena | None = None,
              vnni: bool | None = None) -> Int8PanelWeight:
    """The panels in huge-page memory (``kernels.host_memory``: ``arena``'s, or their own mapping),
    in ``vnni``'s layout when asked or, by default, where the CPU has AVX512-VNNI."""
    out_features, in_features = qweight.shape
    vnni = supports_vnni() if vnni is None else vnni
    if vnni:
        padded = torch.nn.functional.pad(qweight.contiguous(), (0, in_features % 2))
        panels = padded.view(out_features // PANEL, PANEL, -1, 2).permute(0, 2, 1, 3)
    else:
        panels = qweight.contiguous().view(out_features // PANEL, PANEL, in_features).transpose(1, 2)
    place = arena.copy if arena is not None else host_memory.copy
    return Int8PanelWeight(place(panels), scales.float().contiguous(), qweight.shape, vnni=vnni)


def linear_int8(x: torch.Tensor, weight: Int8PanelWeight) -> torch.Tensor:
    """``x @ (qweight * scales[:, None]).T`` for bf16 ``x [..., in]`` -> ``[..., out]`` in bf16."""
    function = "grokd_linear_int8_vnni" if weight.vnni else "grokd_linear_int8"
    return _call(x, weight.shape, function, weight.packed.data_ptr(), weight.scales.data_ptr())


def pack(weight: torch.Tensor, arena: host_memory.Arena | None = None) -> PanelWeight:
    """The panels in huge-page memory (``kernels.host_memory``: ``arena``'s, or their own mapping)."""
    out_features, in_features = weight.shape
    panels = weight.contiguous().view(out_features // PANEL, PANEL, in_features // 2, 2).permute(0, 2, 1, 3)
    return PanelWeight((arena.copy if arena is not None else host_memory.copy)(panels), weight.shape)


def linear_bf16(x: torch.Tensor, weight: PanelWeight) -> torch.Tensor:
    """``x @ weight.T`` for bf16 ``x [..., in]`` -> ``[..., out]`` in bf16."""
    return _call(x, weight.shape, "grokd_linear_bf16", weight.packed.data_ptr())


def _call(x: torch.Tensor, shape: torch.Size, function: str, *weight_pointers: int) -> torch.Tensor:
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        raise ValueError(f"packed CPU weights need bf16 CPU activations, got {x.dtype} on {x.device}")
    out_features, in_features = shape
    lead = x.shape[:-1]
    rows = x.reshape(-1, in_features)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty((rows.shape[0], out_features), dtype=torch.bfloat16)
    if rows.shape[0]:
        library = cpu_build.library()
        assert library is not None, "packed CPU weights exist only where the kernels are built"
        status = getattr(library.lib, function)(rows.data_ptr(), rows.shape[0], rows.stride(0), *weight_pointers,
                                                out_features, in_features, out.data_ptr(), library.threads())
        if status == 2:  # the kernel's scratch copy of x could not be allocated
            raise MemoryError(f"{function}: could not allocate {rows.shape[0]} x {in_features} float32 scratch")
        if status != 0:
            raise RuntimeError(f"{function}: this build has no kernel for this CPU")
    return out.view(*lead, out_features)
