"""Which slice of a model one rank holds, and how its partial results are combined.

``ModelShard`` is the arithmetic: for rank ``r`` of ``n``, its query heads, KV heads, slice of
the FFN intermediate dimension, experts and vocabulary rows. The cuts follow Megatron-style
tensor parallelism:

- attention by heads: ``num_q_heads / n`` query heads per rank and the KV heads they read. With
  more ranks than KV heads each KV head is replicated on the ``n / num_kv_heads`` ranks whose
  query heads use it (GQA groups are contiguous: query head ``h`` reads KV head
  ``h // (num_q_heads / num_kv_heads)``). The o-projection is cut by its input features (the same
  heads), so each rank's output is a partial sum over its heads;
- the FFN by the intermediate dimension: gate/up by output features, down by input features, one
  partial sum per rank; or, with expert parallelism, whole experts per rank, whose contributions
  for all tokens again add up across ranks;
- the vocabulary by rows, for the embedding (ids outside a rank's rows look up zeros, so the sum
  is the one real row) and for the tied output head (each rank computes its columns of logits).

``TensorParallel`` couples a shard with its process group and ``ParallelConfig``: ``reduce`` sums
partials in ``reduce_dtype`` and rounds once to the activation dtype, ``gather_logits`` assembles
the vocabulary columns. On one rank both return their input, so the forward code is the same.

``slice_weight`` cuts a weight by output/input features in either storage layout: plain torch
``[out, in]``, or the release's int8 ``[in, out]`` with bf16 scales ``[G, out]`` (one scale row
per block of ``in / G`` input rows). Cutting the input rows of an int8 weight keeps the scale rows
of the blocks it covers, so the slice must span whole blocks or lie inside one (``scale_rows``);
for the release at 8 ranks each rank's slice of o-proj and of the experts' down projection is
exactly one block. The values may be tensors, ``QuantizedWeight``, or the lazy views of
``weights.lazy``, which read only the sliced bytes from disk.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from grokd.engine.config import ParallelConfig
from grokd.engine.parallel.group import ParallelGroup, SingleGroup
from grokd.kernels.dtypes import DTYPES
from grokd.weights.checkpoint import CheckpointError, QuantizedWeight


def even_part(total: int, parts: int, index: int, what: str) -> range:
    """Part ``index`` of ``total`` cut into ``parts`` equal contiguous pieces."""
    if total % parts:
        raise ValueError(f"{what} ({total}) is not divisible by tensor_parallel_size ({parts})")
    size = total // parts
    return range(index * size, (index + 1) * size)


def kv_heads_of(num_q_heads: int, num_kv_heads: int, parts: int, index: int) -> range:
    """The KV heads rank ``index`` needs: its share of them, or (more ranks than KV heads) the one
    KV head its query heads read."""
    if parts <= num_kv_heads:
        return even_part(num_kv_heads, parts, index, "num_key_value_heads")
    if parts % num_kv_heads:
        raise ValueError(f"tensor_parallel_size ({parts}) must divide or be a multiple of "
                         f"num_key_value_heads ({num_kv_heads})")
    q = even_part(num_q_heads, parts, index, "num_attention_heads")
    head = q.start // (num_q_heads // num_kv_heads)
    return range(head, head + 1)


@dataclass(frozen=True)
class ModelShard:
    """One rank's slices (all ``range`` over the full model's indices)."""

    rank: int
    world_size: int
    q_heads: range
    kv_heads: range
    ffn: range
    experts: range
    vocab: range

    @classmethod
    def build(cls, *, rank: int, world_size: int, num_q_heads: int, num_kv_heads: int,
              intermediate_size: int, vocab_size: int, num_experts: int = 0,
              expert_parallel: bool = False) -> ModelShard:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        n = world_size
        if expert_parallel:
            experts = even_part(num_experts, n, rank, "num_experts")
            ffn = range(intermediate_size)
        else:
            experts = range(num_experts)
            ffn = even_part(intermediate_size, n, rank, "intermediate_size")
        per = -(-vocab_size // n)  # the last rank's rows may be fewer; logits are padded to ``per``
        vocab = range(min(rank * per, vocab_size), min((rank + 1) * per, vocab_size))
        return cls(rank, n, even_part(num_q_heads, n, rank, "num_attention_heads"),
                   kv_heads_of(num_q_heads, num_kv_heads, n, rank), ffn, experts, vocab)

    @classmethod
    def full(cls, *, num_q_heads: int, num_kv_heads: int, intermediate_size: int, vocab_size: int,
             num_experts: int = 0) -> ModelShard:
        return cls(0, 1, range(num_q_heads), range(num_kv_heads), range(intermediate_size),
                   range(num_experts), range(vocab_size))


@dataclass(frozen=True)
class TensorParallel:
    """A process group with the ``ParallelConfig`` it runs; ``single()`` is one device."""

    group: ParallelGroup = field(default_factory=SingleGroup)
    config: ParallelConfig = field(default_factory=ParallelConfig)

    def __post_init__(self) -> None:
        if self.group.world_size != self.config.tensor_parallel_size:
            raise ValueError(f"group has {self.group.world_size} ranks but tensor_parallel_size is "
                             f"{self.config.tensor_parallel_size}")

    @property
    def rank(self) -> int:
        return self.group.rank

    @property
    def world_size(self) -> int:
        return self.group.world_size

    def reduce(self, partial: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """``dtype(sum over ranks of partial)``: the partials travel and add up in ``reduce_dtype``
        and are rounded once at the end. One rank: ``partial`` cast to ``dtype`` (a no-op when it
        already is)."""
        if self.world_size == 1:
            return partial.to(dtype)
        return self.group.all_reduce(partial.to(DTYPES[self.config.reduce_dtype])).to(dtype)

    def gather_logits(self, local: torch.Tensor, vocab_size: int) -> torch.Tensor:
        """Every rank's ``[n, V/ranks]`` columns of logits as ``[n, V]`` on every rank (the last
        rank's may be fewer: padded for the gather, trimmed after)."""
        if self.world_size == 1:
            return local
        per = -(-vocab_size // self.world_size)
        if local.shape[-1] < per:
            local = torch.nn.functional.pad(local, (0, per - local.shape[-1]))
        return self.group.all_gather(local, dim=-1)[..., :vocab_size]


def vocab_rows(table: torch.Tensor, input_ids: torch.Tensor, rows: range) -> torch.Tensor:
    """``table``'s rows for ``input_ids`` where ``table`` holds vocabulary rows ``rows`` of the
    whole embedding: ids outside them look up zeros, so the sum over the ranks is the real row."""
    local = input_ids - rows.start
    inside = (local >= 0) & (local < len(rows))
    return table[local.clamp(0, len(rows) - 1)] * inside[:, None].to(table.dtype)


def scale_rows(k: int, groups: int, rows: range, what: str) -> slice:
    """The scale rows of input rows ``rows`` of an int8 weight with ``k`` rows in ``groups`` blocks."""
    block = k // groups
    if rows.start % block == 0 and rows.stop % block == 0:
        return slice(rows.start // block, rows.stop // block)
    if rows.start // block == (rows.stop - 1) // block:
        return slice(rows.start // block, rows.start // block + 1)
    raise CheckpointError(f"{what}: input rows {rows.start}:{rows.stop} straddle int8 scale blocks of {block} rows")


def _sl(r: range | None) -> slice:
    return slice(None) if r is None else slice(r.start, r.stop)


def slice_weight(value: Any, what: str, out: range | None = None, inp: range | None = None) -> Any:
    """``value`` cut to output features ``out`` and input features ``inp`` (``None``: all).

    Plain weights are ``[out, in]``; int8 ones (anything with ``weight`` and ``scales``, as
    ``QuantizedWeight``) ``[in, out]`` with scales ``[G, out]``. Returns a tensor or a
    ``QuantizedWeight`` of tensors; a lazy value reads only the slice."""
    if out is None and inp is None:
        return value
    if hasattr(value, "scales"):
        k, groups = value.weight.shape[-2], value.scales.shape[-2]
        rows = slice(None) if inp is None else scale_rows(k, groups, inp, what)
        return QuantizedWeight(value.weight[_sl(inp), _sl(out)].contiguous(),
                               value.scales[rows, _sl(out)].contiguous())
    return value[_sl(out), _sl(inp)].contiguous()


def head_rows(heads: range, head_dim: int) -> range:
    """Feature indices of ``heads`` in a head-major ``[heads * head_dim]`` axis."""
    return range(heads.start * head_dim, heads.stop * head_dim)
