"""Dense ``x @ w.T`` with CPU weights reordered once into oneDNN's blocked layout.

A plain ``F.linear`` on CPU reorders the bf16 weight into oneDNN's blocked format on *every*
call; at decode batch sizes (1-32 rows) that reorder and the cache misses it causes cost more
than the multiply itself (benchmarks/RESULTS.md: 13 GB/s effective at batch 1). Packing at load
time, as inductor's CPU "freezing" pass does, removes it: the packed weight is an opaque
``torch._mkldnn`` tensor consumed by ``torch.ops.mkldnn._linear_pointwise``. The products are
bit-identical to ``F.linear`` (tests/kernels/test_linear.py), which stays the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# oneDNN's packed path pays off for these storage dtypes on CPU; float32 would need MKL's packed
# GEMM, which keeps the original weight alongside (double the memory) for a small gain.
PACKABLE = (torch.bfloat16,)


def can_pack(weight: torch.Tensor) -> bool:
    """Whether ``pack_weight`` would reorder ``weight`` (CPU, 2-D, a packable dtype, oneDNN built)."""
    return (
        weight.device.type == "cpu"
        and weight.dim() == 2
        and weight.dtype in PACKABLE
        and not weight.is_mkldnn
        and torch.backends.mkldnn.is_available()
    )


def pack_weight(weight: torch.Tensor, batch_hint: int = 1) -> torch.Tensor:
    """``weight [out, in]`` in oneDNN's blocked layout, or ``weight`` unchanged when it cannot be
    packed. ``batch_hint`` only tunes the layout; any number of rows works afterwards."""
    if not can_pack(weight):
        return weight
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), batch_hint)


def dense_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` in ``x``'s dtype; ``weight`` is dense or packed by ``pack_weight`` and may
    be stored in another dtype than the activations (cast in, computed, cast back)."""
    if x.dtype != weight.dtype:
        return dense_linear(x.to(weight.dtype), weight).to(x.dtype)
    if weight.is_mkldnn:
        return torch.ops.mkldnn._linear_pointwise(x, weight, None, "none", [], "")
    return F.linear(x, weight)
