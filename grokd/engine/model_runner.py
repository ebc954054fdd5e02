"""Owns the KV pool and runs one scheduled batch through the model.

The batch is packed into flat ``input_ids``/``positions`` plus ``AttentionMetadata``; only the
rows whose logits are needed (the last position of a sequence that samples this step, or every
prompt position when prompt logprobs are asked for) go through the output projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from grokd.engine.config import CacheConfig
from grokd.engine.decode_graphs import DecodeGraphs
from grokd.engine.scheduler import ScheduledSeq
from grokd.engine.step_model import StepModel
from grokd.kernels import host_memory
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape, kv_row_width
from grokd.kernels.metadata import AttentionMetadata


def available_memory(device: torch.device) -> int:
    """Bytes that could still be allocated on ``device`` (free GPU memory, or MemAvailable)."""
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
    return 4 << 30


def kv_cache_dtype(cache: CacheConfig, dtype: torch.dtype) -> torch.dtype:
    """The pool's element type: the activation dtype, or int8 (``--kv-cache-dtype int8``)."""
    return torch.int8 if cache.dtype == "int8" else dtype


def kv_bytes_per_block(model: StepModel, block_size: int, kv_dtype: torch.dtype) -> int:
    """Keys and values of ``block_size`` tokens over all layers (int8 rows carry a 4-byte scale)."""
    elem = torch.empty((), dtype=kv_dtype).element_size()
    width = kv_row_width(model.head_dim, kv_dtype)
    return 2 * model.num_layers * block_size * model.num_kv_heads * width * elem


def plan_num_blocks(
    cache: CacheConfig, bytes_per_block: int, device: torch.device, max_useful_blocks: int
) -> int:
    """Pool size: explicit ``num_blocks``, else a byte budget, else a fraction of free memory.

    The fraction path is capped at what ``max_num_seqs`` full-length sequences could use, so a
    small model on a big machine does not grab gigabytes it can never fill.
    """
    if cache.num_blocks is not None:
        return int(cache.num_blocks)
    if cache.kv_cache_memory is not None:
        return max(1, int(cache.kv_cache_memory) // bytes_per_block)
    budget = int(available_memory(device) * cache.kv_cache_fraction)
    return max(1, min(budget // bytes_per_block, max_useful_blocks))


def zeros_lazy(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero-filled tensor; on CPU backed by anonymous memory (``kernels.host_memory``), which the OS
    hands out zeroed page by page on first write, so a multi-GiB KV pool costs neither start-up time
    (``torch.zeros`` writes every byte: ~1 s for the default model's 4 GiB) nor resident memory until
    used. Ordinary pages: a huge-page fault on the serving path may stall to compact memory, and the
    KV reads gained nothing from them (``kernels.host_memory``)."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    return host_memory.zeros(shape, dtype, huge=False)


@dataclass
class RunnerOutput:
    sample_logits: torch.Tensor  # [num sampling seqs, V] float32, in batch order
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
    ) -> None:
        """``decode_graphs``: ``auto`` replays decode steps from CUDA graphs on CUDA when the model
        supports it (``engine.decode_graphs``), ``off`` never does, ``eager`` runs the same padded
        static-buffer path without capturing (how the padding is tested without a GPU)."""
        if decode_graphs not in ("auto", "off", "eager"):
            raise ValueError(f"decode_graphs: expected auto, off or eager, got {decode_graphs!r}")
        self.model = model
        self.device = torch.device(device)
        self.dtype = dtype
        self.block_size = cache.block_size
        self.kv_dtype = kv_cache_dtype(cache, dtype)
        self.bytes_per_block = kv_bytes_per_block(model, cache.block_size, self.kv_dtype)
        self.num_blocks = plan_num_blocks(cache, self.bytes_per_block, self.device, max_useful_blocks)
        capture = (decode_graphs == "auto" and self.device.type == "cuda"
                   and bool(getattr(model, "supports_cuda_graphs", False)))
        use_graphs = capture or decode_graphs == "eager"
        # graphs pad into one spare "sink" block past those the block manager hands out
        pool_blocks = self.num_blocks + int(use_graphs)
        shape = kv_cache_shape(pool_blocks, cache.block_size, model.num_kv_heads, model.head_dim, self.kv_dtype)
        self.kv_caches = [zeros_lazy(shape, self.kv_dtype, self.device) for _ in range(model.num_layers)]
        self.graphs: DecodeGraphs | None = None
        if use_graphs:
            max_blocks = max_blocks_per_seq or ceil_div(model.max_position_embeddings, cache.block_size)
            self.graphs = DecodeGraphs(model, self.kv_caches, cache.block_size, self.num_blocks,
                                       max_batch, max_blocks, capture)

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSeq], prompt_logprob_idx: set[int]) -> RunnerOutput:
        """Run the batch; ``prompt_logprob_idx`` marks entries whose every row's logits are kept."""
        ids: list[int] = []
        pos: list[int] = []
        query_lens: list[int] = []
        seq_lens: list[int] = []
        tables: list[list[int]] = []
        keep_rows: list[int] = []
        sample_rows: list[int] = []
        prompt_spans: dict[int, tuple[int, int]] = {}
        offset = 0
        for i, item in enumerate(batch):
            seq, n = item.seq, item.num_tokens
            start = seq.num_computed_tokens
            ids.extend(seq.token_ids[start : start + n])
            pos.extend(range(start, start + n))
            query_lens.append(n)
            seq_lens.append(start + n)
            tables.append(seq.block_table)
            if i in prompt_logprob_idx:
                prompt_spans[i] = (len(keep_rows), len(keep_rows) + n)
                keep_rows.extend(range(offset, offset + n))
                if item.samples:
                    sample_rows.append(len(keep_rows) - 1)
            elif item.samples:
                sample_rows.append(len(keep_rows))
                keep_rows.append(offset + n - 1)
            offset += n
        dev = self.device
        if (self.graphs is not None and not prompt_spans and len(ids) == len(batch)
                and self.graphs.fits(len(batch), ceil_div(max(seq_lens, default=0), self.block_size))):
            hidden = self.graphs.run(ids, pos, seq_lens, tables)
        else:
            meta = AttentionMetadata.build(query_lens, seq_lens, tables, self.block_size, device=dev)
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
