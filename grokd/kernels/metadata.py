"""Attention metadata: how a flat batch of tokens maps onto sequences and the paged KV cache."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import torch

from grokd.kernels.arith import ceil_div


@dataclass
class DecodeRows:
    """The single-token (decode) rows of a step, derived once per step and reused by every layer:
    their token indices in the flat batch (``whole_batch`` when they are all of it, in order),
    block tables trimmed to the longest context, context lengths, and an additive float32 mask
    ``bias [rows, 1, 1, blocks * block_size]`` (0 inside a row's context, -inf on the padding).

    The mask is built on first use: only the PyTorch attention reads it, and on the CPU, where the
    C kernels take the step, its few small ops cost about 0.1 ms of a batch-1 step (they run with
    the caches cold from the step's weights, benchmarks/RESULTS.md#cpu-decode-kernels)."""

    tokens: torch.Tensor
    block_tables: torch.Tensor
    seq_lens: torch.Tensor
    block_size: int
    whole_batch: bool
    context_tokens: int  # sum of the rows' context lengths (an upper bound under CUDA graphs)
    _gather: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    @cached_property
    def bias(self) -> torch.Tensor:
        span = torch.arange(self.block_tables.shape[1] * self.block_size, device=self.seq_lens.device)
        bias = torch.zeros(self.seq_lens.shape[0], 1, 1, span.numel(), device=self.seq_lens.device)
        return bias.masked_fill_((span[None, :] >= self.seq_lens[:, None])[:, None, None, :], float("-inf"))

    def gather_index(self, kv_heads: int, num_blocks: int) -> torch.Tensor:
        """Row indices into a layer's pool viewed as ``[2 * num_blocks * kv_heads, block_size *
        head_dim]`` (keys' rows, then values'): one ``index_select`` (a memcpy per row, unlike
        advanced indexing's per-element copy) yields every decode row's context head-major,
        ``[2, rows, kv_heads, blocks * block_size, head_dim]``. Built once per step."""
        key = (kv_heads, num_blocks)
        if key not in self._gather:
            heads = torch.arange(kv_heads, device=self.block_tables.device)
            keys = (self.block_tables[:, None, :] * kv_heads + heads[None, :, None]).flatten()
            self._gather[key] = torch.cat((keys, keys + num_blocks * kv_heads))
        return self._gather[key]


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
    _write_rows: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def num_seqs(self) -> int:
        return len(self.seq_lens_list)

    @property
    def num_tokens(self) -> int:
        return int(sum(self.query_lens_list))

    @cached_property
    def decode_rows(self) -> DecodeRows | None:
        """Rows with exactly one query token, or ``None`` when there are none."""
        rows = [i for i, n in enumerate(self.query_lens_list) if n == 1]
        if not rows:
            return None
        device = self.seq_lens.device
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        blocks = ceil_div(max(self.seq_lens_list[i] for i in rows), self.block_size)
        return DecodeRows(
            tokens=self.query_start_loc[idx],
            block_tables=self.block_tables[idx, :blocks],
            seq_lens=self.seq_lens[idx],
            block_size=self.block_size,
            whole_batch=len(rows) == len(self.query_lens_list),
            context_tokens=sum(self.seq_lens_list[i] for i in rows),
        )

    def write_rows(self, kv_heads: int, num_blocks: int) -> torch.Tensor:
        """Row indices, into a layer's pool viewed as ``[2 * num_blocks * kv_heads * block_size,
        head_dim]``, of the new tokens' keys then values, ordered ``[2, tokens, kv_heads]`` like
        the rows ``write_kv`` copies from (built once per step, reused by every layer)."""
        key = (kv_heads, num_blocks)
        if key not in self._write_rows:
            blocks = self.slot_mapping // self.block_size
            offsets = self.slot_mapping % self.block_size
            heads = torch.arange(kv_heads, device=self.slot_mapping.device)
            keys = ((blocks[:, None] * kv_heads + heads[None, :]) * self.block_size + offsets[:, None]).flatten()
            self._write_rows[key] = torch.cat((keys, keys + num_blocks * kv_heads * self.block_size))
        return self._write_rows[key]

    @cached_property
    def multi_token_rows(self) -> tuple[AttentionMetadata, torch.Tensor] | None:
        """Metadata restricted to the rows with several query tokens (prefill chunks), renumbered
        from 0, and those tokens' indices in the flat batch; ``None`` when there are none."""
        rows = [i for i, n in enumerate(self.query_lens_list) if n != 1]
        if not rows:
            return None
        device = self.seq_lens.device
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        q_lens = [self.query_lens_list[i] for i in rows]
        starts = [0]
        for n in q_lens:
            starts.append(starts[-1] + n)
        sub = AttentionMetadata(
            slot_mapping=self.slot_mapping.new_empty(0),  # the subset is only read, never written
            query_start_loc=torch.tensor(starts, dtype=torch.int64, device=device),
            seq_lens=self.seq_lens[idx],
            block_tables=self.block_tables[idx],
            block_size=self.block_size,
            query_lens_list=q_lens,
            seq_lens_list=[self.seq_lens_list[i] for i in rows],
        )
        first = self.query_start_loc.tolist()
        tokens = torch.cat([torch.arange(first[i], first[i + 1]) for i in rows]).to(device)
        return sub, tokens

    @classmethod
    def for_decode(
        cls, slot_mapping: torch.Tensor, seq_lens: torch.Tensor, block_tables: torch.Tensor, block_size: int
    ) -> AttentionMetadata:
        """Decode-only metadata built from device tensors alone, never reading their values on the
        host: one query token per row, each row's context read through *all* columns of
        ``block_tables`` and masked beyond ``seq_lens``. This is what a captured CUDA graph
        replays (``engine.decode_graphs``); ``seq_lens_list`` holds the padded span, an upper
        bound that the whole-batch decode path never reads."""
        rows, blocks = block_tables.shape
        device = block_tables.device
        starts = torch.arange(rows + 1, device=device)
        meta = cls(
            slot_mapping=slot_mapping,
            query_start_loc=starts,
            seq_lens=seq_lens,
            block_tables=block_tables,
            block_size=block_size,
            query_lens_list=[1] * rows,
            seq_lens_list=[blocks * block_size] * rows,
        )
        # preset the cached property: the rows are known without looking at the lengths
        decode = DecodeRows(starts[:-1], block_tables, seq_lens, block_size, whole_batch=True,
                            context_tokens=rows * blocks * block_size)
        decode.bias  # noqa: B018 (built now, from the step's own tensors, so that a captured graph replays it)
        meta.__dict__["decode_rows"] = decode
        return meta

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
