"""Attention metadata: how a flat batch of tokens maps onto sequences and the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class AttentionMetadata:
    """Describes one model step over a flat batch of tokens.

    Tokens of all sequences are concatenated: sequence ``i`` owns query tokens
    ``query_start_loc[i]:query_start_loc[i+1]``, which are the *last* ``query_lens[i]`` tokens of
    a context of ``seq_lens[i]`` tokens. Keys/values of the new tokens are written to the cache at
    ``slot_mapping`` (``block_id * block_size + offset``); keys of the whole context are read through
    ``block_tables[i]``. The python lists duplicate the tensors so kernels never sync the device to
    learn shapes.
    """

    slot_mapping: torch.Tensor  # [num_tokens] int64
    query_start_loc: torch.Tensor  # [num_seqs + 1] int64
    seq_lens: torch.Tensor  # [num_seqs] int64
    block_tables: torch.Tensor  # [num_seqs, max_blocks_per_seq] int64, padded with 0
    block_size: int
    query_lens_list: list[int]
    seq_lens_list: list[int]

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_list)

    @property
    def num_tokens(self) -> int:
        return int(sum(self.query_lens_list))

    @classmethod
    def build(
        cls,
        query_lens: list[int],
        seq_lens: list[int],
        block_tables: list[list[int]],
        block_size: int,
        device: torch.device | str = "cpu",
    ) -> AttentionMetadata:
        """Build metadata from per-sequence python lists (what the model runner has)."""
        slots: list[int] = []
        for q_len, s_len, table in zip(query_lens, seq_lens, block_tables, strict=True):
            for pos in range(s_len - q_len, s_len):
                slots.append(table[pos // block_size] * block_size + pos % block_size)
        max_blocks = max((len(t) for t in block_tables), default=0)
        padded = [t + [0] * (max_blocks - len(t)) for t in block_tables]
        starts = [0]
        for q_len in query_lens:
            starts.append(starts[-1] + q_len)
        return cls(
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
            query_start_loc=torch.tensor(starts, dtype=torch.int64, device=device),
            seq_lens=torch.tensor(seq_lens, dtype=torch.int64, device=device),
            block_tables=torch.tensor(padded, dtype=torch.int64, device=device).reshape(len(padded), max_blocks),
            block_size=block_size,
            query_lens_list=list(query_lens),
            seq_lens_list=list(seq_lens),
        )
