"""bf16 projections on CPUs with AVX512-BF16, through the C micro-kernel in
``kernels/csrc/linear_bf16.c`` (built by ``kernels.cpu_build``).

Why: at decode batch sizes oneDNN's packed bf16 GEMM (``kernels.linear``) reaches about a third of
this machine's bf16 peak (benchmarks/RESULTS.md, session 4). The weights are packed once, at load,
into panels of 16 output columns by pairs of input features (``PanelWeight``), the operand layout
of ``vdpbf16ps``; the kernel keeps a 32-column by 8-row tile of float32 sums in registers and
splits column groups across torch's OpenMP threads. Its twin is ``F.linear`` on the unpacked
weight (tests/kernels/test_cpu_linear.py): float32 sums of exact products, rounded once to bf16,
so the two differ only in summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels import cpu_build

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


def _has_kernel() -> bool:
    library = cpu_build.library()
    return library is not None and bool(library.lib.grokd_linear_bf16_available())


def supports_weight(weight: torch.Tensor) -> bool:
    """Whether ``pack`` takes ``weight``: a 2-D bf16 CPU tensor with an even number of input
    features and a multiple of 32 outputs, on a machine whose build has the kernel."""
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


def pack(weight: torch.Tensor) -> PanelWeight:
    out_features, in_features = weight.shape
    panels = weight.contiguous().view(out_features // PANEL, PANEL, in_features // 2, 2)
    return PanelWeight(panels.permute(0, 2, 1, 3).contiguous(), weight.shape)


def linear(x: torch.Tensor, weight: PanelWeight) -> torch.Tensor:
    """``x @ weight.T`` for bf16 ``x [..., in]`` -> ``[..., out]`` in bf16."""
    if x.dtype != torch.bfloat16 or x.device.type != "cpu":
        raise ValueError(f"PanelWeight needs bf16 CPU activations, got {x.dtype} on {x.device}")
    out_features, in_features = weight.shape
    lead = x.shape[:-1]
    rows = x.reshape(-1, in_features)
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    out = torch.empty((rows.shape[0], out_features), dtype=torch.bfloat16)
    if rows.shape[0]:
        library = cpu_build.library()
        status = library.lib.grokd_linear_bf16(rows.data_ptr(), rows.shape[0], rows.stride(0), weight.packed.data_ptr(),
                                               out_features, in_features, out.data_ptr(), library.threads())
        if status != 0:
            raise RuntimeError("grokd_linear_bf16: this build has no AVX512-BF16 kernel")
    return out.view(*lead, out_features)
