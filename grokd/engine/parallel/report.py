"""What each rank of a tensor-parallel engine logs once its shard is loaded."""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable

import torch

MiB = 1 << 20


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (``getrusage``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def shard_loaded(rank: int, world_size: int, model: object) -> str:
    """``rank r/n: shard loaded, W MiB of weights, peak RSS P MiB``: the weights this rank holds
    and the most host memory it has used, loading included (a rank spawned by ``grokd serve``
    starts with a fresh process, so its peak is its loading's; rank 0's includes the server)."""
    params: Iterable[torch.Tensor] = model.parameters() if isinstance(model, torch.nn.Module) else ()
    weights = sum(p.numel() * p.element_size() for p in params)
    return (f"rank {rank}/{world_size}: shard loaded, {weights / MiB:.1f} MiB of weights, "
            f"peak RSS {peak_rss_bytes() / MiB:.0f} MiB")
