"""Shared by the kernel tests: block tables scattered through a shuffled pool, as a long-running
server's block manager leaves them (a sequence's blocks neither contiguous nor in order)."""

from __future__ import annotations

import torch

from grokd.kernels.arith import ceil_div


def scattered_tables(seq_lens: list[int], block_size: int, generator: torch.Generator,
                     spare: int = 0) -> tuple[list[list[int]], int]:
    """``(tables, num_blocks)``: each sequence's blocks drawn from a random permutation of a pool of
    exactly the blocks needed plus ``spare``."""
    need = [ceil_div(n, block_size) for n in seq_lens]
    num_blocks = sum(need) + spare
    perm = torch.randperm(num_blocks, generator=generator).tolist()
    tables, at = [], 0
    for n in need:
        tables.append(perm[at:at + n])
        at += n
    return tables, num_blocks
