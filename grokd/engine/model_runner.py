"""Owns the KV pool and runs one scheduled batch through the model.

The batch is packed into flat ``input_ids``/``positions`` plus ``AttentionMetadata``; only the
rows whose logits are needed (the last position of a sequence that samples this step, or every
prompt position when prompt logprobs are asked for) go through the output projection.

A step is two halves: ``prepare`` turns the scheduler's batch into ``StepInputs``, plain lists
that pickle in microseconds, and ``run`` executes them. On a tensor-parallel server rank 0
prepares, sends the inputs to the other ranks through a ``StepChannel`` and runs; the other
ranks (``engine.parallel.worker``) receive and run the same inputs on their shards, so every
collective inside the forward meets its peers. The KV pools agree too: each rank sizes its own
from its free memory and all of them take the smallest count, so a block id the block manager
hands out exists on every rank.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from grokd.engine.config import CacheConfig
from grokd.engine.decode_graphs import DecodeGraphs
from grokd.engine.errors import ParallelFailure
from grokd.engine.kv_budget import KVPoolTooLarge, PoolInputs, PoolPlan, plan_pool
from grokd.engine.memory import available_memory, weight_bytes
from grokd.engine.parallel.channel import StepChannel
from grokd.engine.parallel.group import ParallelGroup, SingleGroup
from grokd.engine.scheduler import ScheduledSeq
from grokd.engine.step_model import StepModel
from grokd.kernels import host_memory
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape, kv_row_width
from grokd.kernels.metadata import AttentionMetadata

log = logging.getLogger(__name__)


def kv_cache_dtype(cache: CacheConfig, dtype: torch.dtype) -> torch.dtype:
    """The pool's element type: the activation dtype, or int8 (``--kv-cache-dtype int8``)."""
    return torch.int8 if cache.dtype == "int8" else dtype


def kv_bytes_per_block(model: StepModel, block_size: int, kv_dtype: torch.dtype) -> int:
    """Keys and values of ``block_size`` tokens over all layers (int8 rows carry a 4-byte scale)."""
    elem = torch.empty((), dtype=kv_dtype).element_size()
    width = kv_row_width(model.head_dim, kv_dtype)
    return 2 * model.num_layers * block_size * model.num_kv_heads * width * elem


def plan_num_blocks(
    cache: CacheConfig, bytes_per_block: int, device: torch.device, max_useful_blocks: int,
    blocks_per_seq: int = 1, weights_bytes: int = 0, available_bytes: int | None = None,
) -> PoolPlan:
    """The pool for this runner (``engine.kv_budget.plan_pool``): explicit ``num_blocks`` or byte
    budget, checked against the memory available on ``device`` (read now unless given), else the
    smallest of the machine's share, what ``max_useful_blocks`` can hold, and on the CPU a bound
    from the weights."""
    return plan_pool(PoolInputs(
        bytes_per_block=bytes_per_block, scheduler_blocks=max_useful_blocks, blocks_per_seq=blocks_per_seq,
        available_bytes=available_memory(device) if available_bytes is None else available_bytes,
        weights_bytes=weights_bytes, on_cpu=device.type == "cpu", kv_cache_memory=cache.kv_cache_memory,
        num_blocks=cache.num_blocks, kv_cache_fraction=cache.kv_cache_fraction,
        prefix_caching=cache.enable_prefix_caching,
    ))


def zeros_lazy(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
               resident: bool = False) -> torch.Tensor:
    """A zero-filled tensor; on CPU backed by anonymous memory (``kernels.host_memory``), which the OS
    hands out zeroed page by page on first write, so untouched pages cost neither start-up time nor
    resident memory. ``resident``: every page faulted in now instead (how the KV pool is made, so
    the memory it reserves is held from start-up, and a pool that cannot be had fails there).
    Ordinary pages: a huge-page fault on the serving path may stall to compact memory, and the KV
    reads gained nothing from them (``kernels.host_memory``)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return host_memory.zeros(shape, dtype, huge=False, resident=resident)


@dataclass
class StepInputs:
    """One step's flat batch: what every rank needs to run the same forward.

    ``keep_rows`` are the rows that go through the output projection; ``sample_rows`` index
    ``keep_rows``' logits for the sampling sequences; ``prompt_spans`` maps a batch index to its
    slice of them when its prompt logprobs are kept."""

    ids: list[int] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    query_lens: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    block_tables: list[list[int]] = field(default_factory=list)
    keep_rows: list[int] = field(default_factory=list)
    sample_rows: list[int] = field(default_factory=list)
    prompt_spans: dict[int, tuple[int, int]] = field(default_factory=dict)


def agree_num_blocks(group: ParallelGroup, num_blocks: int, device: torch.device) -> int:
    """The smallest of every rank's ``num_blocks`` (all ranks call it; one rank: ``num_blocks``).
    The first collective after loading: it waits for the slowest rank to load first."""
    if group.world_size == 1:
        return num_blocks
    group.wait_for_all()
    counts = group.all_gather(torch.tensor([num_blocks], dtype=torch.int64, device=device), dim=0)
    return int(counts.min())


@dataclass
class RunnerOutput:
    sample_logits: torch.Tensor  # [sampled rows, V] float32, in batch order (1 + len(draft) per draft)
    prompt_logits: dict[int, torch.Tensor]  # batch index -> [chunk len, V] float32


class ModelRunner:
    def __init__(
        self,
        model: StepModel,
        cache: CacheConfig,
        dtype: torch.dtype,
        device: torch.device | str,
        max_useful_blocks: int,
        decode_graphs: str = "auto",
        max_batch: int = 256,
        max_blocks_per_seq: int | None = None,
        group: ParallelGroup | None = None,
    ) -> None:
        """``decode_graphs``: ``auto`` replays decode steps from CUDA graphs on CUDA when the model
        supports it (``engine.decode_graphs``), ``off`` never does, ``eager`` runs the same padded
        static-buffer path without capturing (how the padding is tested without a GPU).

        ``group``: the ranks that hold the model's shards, all of which build their runner at the
        same time (the pool size is agreed collectively). Steps are then sent through
        ``self.channel`` and decode graphs are not used (their replay would hide the collectives)."""
        if decode_graphs not in ("auto", "off", "eager"):
            raise ValueError(f"decode_graphs: expected auto, off or eager, got {decode_graphs!r}")
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.group = group or SingleGroup()
        self.channel = StepChannel(self.group) if self.group.world_size > 1 else None
        self.block_size = cache.block_size
        self.kv_dtype = kv_cache_dtype(cache, dtype)
        self.bytes_per_block = kv_bytes_per_block(model, cache.block_size, self.kv_dtype)
        blocks_per_seq = max_blocks_per_seq or ceil_div(model.max_position_embeddings, cache.block_size)
        self.weights_bytes = weight_bytes(model)
        self.plan = plan_num_blocks(cache, self.bytes_per_block, self.device, max_useful_blocks,
                                    blocks_per_seq, self.weights_bytes)
        self.num_blocks = agree_num_blocks(self.group, self.plan.num_blocks, self.device)
        if self.channel is not None:
            decode_graphs = "off"
        capture = (decode_graphs == "auto" and self.device.type == "cuda"
                   and bool(getattr(model, "supports_cuda_graphs", False)))
        use_graphs = capture or decode_graphs == "eager"
        # graphs pad into one spare "sink" block past those the block manager hands out
        pool_blocks = self.num_blocks + int(use_graphs)
        shape = kv_cache_shape(pool_blocks, cache.block_size, model.num_kv_heads, model.head_dim, self.kv_dtype)
        try:
            self.kv_caches = [zeros_lazy(shape, self.kv_dtype, self.device, resident=True)
                              for _ in range(model.num_layers)]
        except (OSError, MemoryError, torch.OutOfMemoryError) as exc:
            raise KVPoolTooLarge(f"KV pool of {self.plan.describe()} could not be allocated: {exc}") from exc
        log.info("KV pool: %s, resident; weights %.0f MiB", self.plan.describe(), self.weights_bytes / 2**20)
        self.graphs: DecodeGraphs | None = None
        if use_graphs:
            self.graphs = DecodeGraphs(model, self.kv_caches, cache.block_size, self.num_blocks,
                                       max_batch, blocks_per_seq, capture)

    def execute(self, batch: list[ScheduledSeq], prompt_logprob_idx: set[int]) -> RunnerOutput:
        """Run the batch; ``prompt_logprob_idx`` marks entries whose every row's logits are kept.
        On several ranks the inputs go to the others first; any failure then (a dead rank, a
        timed-out collective, or an error that left the ranks out of step) is a
        ``ParallelFailure``: the ranks can no longer be trusted to agree."""
        inputs = self.prepare(batch, prompt_logprob_idx)
        if self.channel is None:
            return self.run(inputs)
        try:
            self.channel.send_step(inputs)
            return self.run(inputs)
        except Exception as exc:
            raise ParallelFailure(f"tensor-parallel step failed: {type(exc).__name__}: {exc}") from exc

    def keepalive(self) -> None:
        """Tell idle ranks the leader is alive, so their wait for the next step does not time out
        (and find out that one of them died). A no-op on one rank."""
        if self.channel is not None:
            try:
                self.channel.send_keepalive()
            except Exception as exc:
                raise ParallelFailure(f"tensor-parallel keep-alive failed: {type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        """Release the other ranks from their step loop (they exit); a no-op on one rank."""
        if self.channel is not None:
            self.channel.send_stop()
            self.channel = None

    def follow(self) -> int:
        """The loop of a rank other than 0: run each step rank 0 sends until it sends a stop;
        returns the number of steps run."""
        assert self.channel is not None, "follow() runs on a rank of a multi-rank group"
        steps = 0
        while (inputs := self.channel.receive()) is not None:
            self.run(inputs)
            steps += 1
        return steps

    @staticmethod
    def prepare(batch: list[ScheduledSeq], prompt_logprob_idx: set[int]) -> StepInputs:
        """Flatten the scheduled batch into ``StepInputs``."""
        step = StepInputs()
        offset = 0
        for i, item in enumerate(batch):
            seq, n = item.seq, item.num_tokens
            start = seq.num_computed_tokens
            if item.draft:
                ModelRunner._prepare_draft(step, item, offset)
                offset += n
                continue
            step.ids.extend(seq.token_ids[start : start + n])
            step.positions.extend(range(start, start + n))
            step.query_lens.append(n)
            step.seq_lens.append(start + n)
            step.block_tables.append(list(seq.block_table))
            if i in prompt_logprob_idx:
                step.prompt_spans[i] = (len(step.keep_rows), len(step.keep_rows) + n)
                step.keep_rows.extend(range(offset, offset + n))
                if item.samples:
                    step.sample_rows.append(len(step.keep_rows) - 1)
            elif item.samples:
                step.sample_rows.append(len(step.keep_rows))
                step.keep_rows.append(offset + n - 1)
            offset += n
        return step

    @staticmethod
    def _prepare_draft(step: StepInputs, item: ScheduledSeq, offset: int) -> None:
        """A decode with a speculative draft: its last known token and each drafted one become
        a query row of their own, as ``1 + len(draft)`` decode rows of one sequence over the
        same block table, row ``j`` with a context of ``start + j + 1`` tokens. Every layer writes
        all rows' keys and values before any row attends, so row ``j`` sees the drafted tokens
        before it: causal attention over the draft, through the decode kernels (the C stack on
        the CPU, CUDA graphs on a GPU) with the numerics of one-token decoding, so greedy
        verification reproduces non-speculative output. Every row's logits are kept and sampled."""
        seq, start = item.seq, item.seq.num_computed_tokens
        table = list(seq.block_table)
        for j, tok in enumerate([seq.token_ids[start], *item.draft]):
            step.ids.append(tok)
            step.positions.append(start + j)
            step.query_lens.append(1)
            step.seq_lens.append(start + j + 1)
            step.block_tables.append(table)
            step.sample_rows.append(len(step.keep_rows))
            step.keep_rows.append(offset + j)

    @torch.inference_mode()
    def run(self, step: StepInputs) -> RunnerOutput:
        """The forward pass and output projection of one prepared step."""
        ids, pos, seq_lens, tables = step.ids, step.positions, step.seq_lens, step.block_tables
        keep_rows, sample_rows, prompt_spans = step.keep_rows, step.sample_rows, step.prompt_spans
        dev = self.device
        if (self.graphs is not None and not prompt_spans and len(ids) == len(seq_lens)
                and self.graphs.fits(len(seq_lens), ceil_div(max(seq_lens, default=0), self.block_size))):
            hidden = self.graphs.run(ids, pos, seq_lens, tables)
        else:
            meta = AttentionMetadata.build(step.query_lens, seq_lens, tables, self.block_size, device=dev)
            input_ids = torch.tensor(ids, dtype=torch.int64, device=dev)
            positions = torch.tensor(pos, dtype=torch.int64, device=dev)
            hidden = self.model(input_ids, positions, self.kv_caches, meta)
        if not keep_rows:
            vocab = self.model.vocab_size
            return RunnerOutput(torch.empty(0, vocab, dtype=torch.float32, device=dev), {})
        # decode-only steps keep and sample every row in order: no gathers (a [rows, vocab] copy)
        if keep_rows != list(range(hidden.shape[0])):
            hidden = hidden[torch.tensor(keep_rows, device=dev)]
        logits = self.model.compute_logits(hidden).float()
        sample_logits = logits
        if sample_rows != list(range(logits.shape[0])):
            sample_logits = logits[torch.tensor(sample_rows, dtype=torch.int64, device=dev)]
        prompt_logits = {i: logits[a:b] for i, (a, b) in prompt_spans.items()}
        return RunnerOutput(sample_logits, prompt_logits)
