"""What the process holds in memory, for sizing the KV pool and reporting it: the bytes still
available on a device, the loaded model's weight bytes, and the process's resident set."""

from __future__ import annotations

import os
from typing import Any

import torch

FALLBACK_AVAILABLE = 4 << 30  # where /proc/meminfo cannot be read


def available_memory(device: torch.device) -> int:
    """Bytes that could still be allocated on ``device``: free GPU memory, or MemAvailable (memory
    free plus what the kernel can reclaim without swapping)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return FALLBACK_AVAILABLE


def resident_bytes() -> int:
    """This process's resident set size (``/proc/self/statm``), 0 where there is none to read."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def weight_bytes(model: Any) -> int:
    """Bytes of a loaded model's weights: its parameters and buffers (tied tensors, at one address,
    count once) plus the packed projections kept outside them (``kernels.linear``'s packed forms,
    which report their own ``nbytes``)."""
    from grokd.kernels.linear import PackedWeight

    seen: set[int] = set()
    total = 0
    if isinstance(model, torch.nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            if t.device.type == "meta" or t.data_ptr() in seen:
                continue
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
        for module in model.modules():
            for value in vars(module).values():
                if isinstance(value, PackedWeight) and id(value) not in seen:
                    seen.add(id(value))
                    total += value.nbytes()
    return total
