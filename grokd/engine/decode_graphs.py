"""Decode steps replayed from captured CUDA graphs.

Why: eager decode of a small model on a GPU is bound by kernel launches and Python, not by the
chip: an eager SmolLM2-135M step at batch 1 takes hundreds of times longer than reading its weights
(benchmarks/RESULTS.md#gpu). A captured graph replays a step's ~1,000 kernels in
one launch, as vLLM and SGLang do.

A graph fixes every shape, so a decode batch is padded to a bucket: rows to the next entry of
``BATCH_BUCKETS``, block tables to the next power of two of blocks. The padding needs somewhere
harmless to go. The KV pool gets one spare *sink* block past the blocks the block manager hands
out: padded rows write their key/value into the sink and attend only to its first slot, and
real rows' tables are padded with it and masked (``AttentionMetadata.for_decode``). Each bucket
is captured lazily, the first time a step needs it, into one memory pool shared by all graphs.

Graphs need a model whose forward never reads device values on the host; models say so with
``supports_cuda_graphs`` (dense Llama: yes; Grok-1's MoE groups tokens with a host-side count).
With ``capture=False`` the same padded, static-buffer path runs eagerly: that is how the padding
and the sink are tested on machines without a GPU.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from grokd.engine.step_model import StepModel
from grokd.kernels.arith import ceil_div
from grokd.kernels.metadata import AttentionMetadata

BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256)


def bucket(n: int, sizes: list[int]) -> int | None:
    """The smallest size in sorted ``sizes`` that holds ``n``, or ``None`` when none does."""
    i = bisect.bisect_left(sizes, n)
    return sizes[i] if i < len(sizes) else None


def block_buckets(max_blocks: int) -> list[int]:
    """Powers of two below ``max_blocks``, then ``max_blocks`` itself."""
    sizes, n = [], 1
    while n < max_blocks:
        sizes.append(n)
        n *= 2
    return [*sizes, max_blocks]


@dataclass
class _Step:
    """One bucket's static buffers: every input packed in one int64 tensor (ids, positions, slots,
    context lengths, then the block tables row by row), and the hidden states a replay writes."""

    inputs: torch.Tensor
    hidden: torch.Tensor | None = None
    graph: torch.cuda.CUDAGraph | None = None


class DecodeGraphs:
    """Runs decode-only batches through per-bucket static buffers, replaying CUDA graphs."""

    def __init__(
        self,
        model: StepModel,
        kv_caches: list[torch.Tensor],
        block_size: int,
        sink_block: int,
        max_batch: int,
        max_blocks: int,
        capture: bool,
    ) -> None:
        self.model = model
        self.kv_caches = kv_caches
        self.block_size = block_size
        self.sink_block = sink_block
        self.batch_sizes = [b for b in BATCH_BUCKETS if b < max_batch] + [max_batch]
        self.block_sizes = block_buckets(max_blocks)
        self.capture = capture
        self.device = kv_caches[0].device
        self.pool = torch.cuda.graph_pool_handle() if capture else None
        self._steps: dict[tuple[int, int], _Step] = {}

    @property
    def num_graphs(self) -> int:
        return sum(step.graph is not None for step in self._steps.values())

    def fits(self, rows: int, blocks: int) -> bool:
        return bucket(rows, self.batch_sizes) is not None and bucket(blocks, self.block_sizes) is not None

    def run(self, ids: list[int], positions: list[int], seq_lens: list[int],
            tables: list[list[int]]) -> torch.Tensor:
        """Hidden states ``[len(ids), hidden]`` of one decode step (one token per sequence); the
        result is a view of a static buffer, valid until the next call."""
        rows = len(ids)
        blocks_needed = max(ceil_div(n, self.block_size) for n in seq_lens)
        b = bucket(rows, self.batch_sizes)
        nb = bucket(blocks_needed, self.block_sizes)
        if b is None or nb is None:
            raise ValueError(f"decode batch of {rows} rows x {blocks_needed} blocks exceeds the captured sizes")
        pad = b - rows
        sink = self.sink_block
        slots = [t[(n - 1) // self.block_size] * self.block_size + (n - 1) % self.block_size
                 for t, n in zip(tables, seq_lens, strict=True)]
        flat_tables: list[int] = []
        for t, n in zip(tables, seq_lens, strict=True):
            used = t[: ceil_div(n, self.block_size)]
            flat_tables += used + [sink] * (nb - len(used))
        flat_tables += [sink] * (nb * pad)
        packed = (ids + [0] * pad) + (positions + [0] * pad) + (slots + [sink * self.block_size] * pad) \
            + (seq_lens + [1] * pad) + flat_tables
        step = self._steps.get((b, nb))
        host = torch.tensor(packed, dtype=torch.int64)
        if step is None:
            step = self._steps[(b, nb)] = _Step(torch.empty(host.numel(), dtype=torch.int64, device=self.device))
        step.inputs.copy_(host, non_blocking=True)
        if step.graph is None and self.capture:
            self._capture(step, b, nb)
        if step.graph is not None:
            step.graph.replay()
        else:
            step.hidden = self._forward(step.inputs, b, nb)
        assert step.hidden is not None, "the capture or the forward pass above wrote it"
        return step.hidden[:rows]

    def _forward(self, inputs: torch.Tensor, rows: int, blocks: int) -> torch.Tensor:
        ids, positions, slots, seq_lens, tables = inputs.split([rows] * 4 + [rows * blocks])
        meta = AttentionMetadata.for_decode(slots, seq_lens, tables.view(rows, blocks), self.block_size)
        return self.model(ids, positions, self.kv_caches, meta)

    def _capture(self, step: _Step, rows: int, blocks: int) -> None:
        """Warm up on a side stream (lazy library initialisation must not land in the graph),
        then capture. Both write the step's real keys/values, which the replay writes again."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            self._forward(step.inputs, rows, blocks)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            step.hidden = self._forward(step.inputs, rows, blocks)
        step.graph = graph
