"""Token slots sorted and padded by expert, on the device: the schedule the fused MoE's grouped
GEMMs read (``fused_moe``).

A token's ``k``-th choice is *slot* ``token * top_k + k``. The slots are sorted by the expert they
chose (stable, so a token's slots keep their order) and each expert's run is padded to a multiple
of ``block_m`` with the sentinel ``num_slots``, so that every block of ``block_m`` sorted rows
belongs to one expert (``block_expert``; ``-1`` for the blocks past the last run). Slots whose
expert this rank does not hold (expert parallelism) are left out.

Everything is a fixed-size tensor op: the sizes follow from the number of slots, the number of
experts and ``block_m`` alone (at most ``block_m - 1`` padding rows per expert), never from the
routing, so nothing is read back to the host and the step can be captured in a CUDA graph. The
per-expert counts come from ``scatter_add_``, not ``bincount``, whose CUDA version syncs to size
its output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokd.kernels.arith import ceil_div


@dataclass(frozen=True)
class ExpertSchedule:
    """``sorted_slots [num_blocks * block_m]`` (sentinel ``num_slots`` on padding rows) and
    ``block_expert [num_blocks]`` (local expert index, ``-1``: nothing to do)."""

    sorted_slots: torch.Tensor
    block_expert: torch.Tensor
    num_slots: int
    block_m: int

    @property
    def num_blocks(self) -> int:
        return self.block_expert.shape[0]


def max_blocks(num_slots: int, num_experts: int, block_m: int) -> int:
    """The grid bound: blocks of ``block_m`` rows the padded runs can need at most."""
    return ceil_div(num_slots + num_experts * (block_m - 1), block_m)


def schedule(expert_ids: torch.Tensor, num_experts: int, first_expert: int, block_m: int) -> ExpertSchedule:
    """The schedule of ``expert_ids [T, top_k]`` (global ids) for the ``num_experts`` experts held
    here, starting at global id ``first_expert``."""
    device = expert_ids.device
    flat = expert_ids.reshape(-1).to(torch.int64) - first_expert
    num_slots = flat.numel()
    held = (flat >= 0) & (flat < num_experts)
    local = torch.where(held, flat, torch.full_like(flat, num_experts))  # bucket E: not held here
    counts = torch.zeros(num_experts + 1, dtype=torch.int64, device=device)
    counts.scatter_add_(0, local, torch.ones_like(local))
    order = torch.argsort(local, stable=True)
    sorted_local = local[order]
    run_start = torch.cumsum(counts, 0) - counts
    rank = torch.arange(num_slots, device=device) - run_start[sorted_local]
    padded = (counts[:num_experts] + block_m - 1) // block_m * block_m
    padded_end = torch.cumsum(padded, 0)
    blocks = max_blocks(num_slots, num_experts, block_m)
    rows = blocks * block_m
    starts = torch.cat((padded_end - padded, torch.full((1,), rows, dtype=torch.int64, device=device)))
    dest = torch.where(sorted_local < num_experts, starts[sorted_local] + rank, torch.full_like(rank, rows))
    sorted_slots = torch.full((rows + 1,), num_slots, dtype=torch.int64, device=device)
    sorted_slots.scatter_(0, dest, order)  # the slots not held land on the spare last row
    block_start = torch.arange(0, rows, block_m, device=device)
    expert = torch.searchsorted(padded_end, block_start, right=True)
    block_expert = torch.where(expert < num_experts, expert, torch.full_like(expert, -1))
    return ExpertSchedule(sorted_slots[:rows], block_expert, num_slots, block_m)
