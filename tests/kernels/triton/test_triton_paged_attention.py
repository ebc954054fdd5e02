"""Paged attention against its PyTorch twin (``kernels.attention.paged_attention``): GQA groups 2
and 6, block sizes 4 and 16, contexts of 1 to 300 tokens in block tables scattered through the
pool, decode and prefill rows mixed in one step (chunked prefill: queries at the context's end),
int8 pools, logits large enough to saturate the soft cap, several key splits, and the decode-only
metadata a CUDA graph replays."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels.attention import kv_cache_shape, paged_attention, write_kv
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.triton import paged_attention as triton_attention
from tests.kernels.paged_step import scattered_tables
from tests.kernels.triton.compare import assert_relative_close

HEAD_DIM = 16


def _step(q_lens: list[int], seq_lens: list[int], kv_heads: int, group: int, block_size: int,
          kv_dtype: torch.dtype, device: str, magnitude: float = 1.0, seed: int = 0,
          dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor, AttentionMetadata]:
    """Queries, a pool holding every sequence's whole context, and the step's metadata."""
    g = torch.Generator().manual_seed(seed)
    tables, num_blocks = scattered_tables(seq_lens, block_size, g, spare=2)
    cache = torch.zeros(kv_cache_shape(num_blocks, block_size, kv_heads, HEAD_DIM, kv_dtype), dtype=kv_dtype)
    whole = AttentionMetadata.build(seq_lens, seq_lens, tables, block_size)
    tokens = sum(seq_lens)
    k = torch.randn(tokens, kv_heads, HEAD_DIM, generator=g) * magnitude
    v = torch.randn(tokens, kv_heads, HEAD_DIM, generator=g)
    write_kv(cache, k.to(dtype), v.to(dtype), whole)
    q = (torch.randn(sum(q_lens), kv_heads * group, HEAD_DIM, generator=g) * magnitude).to(dtype)
    meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size, device=device)
    return q.to(device), cache.to(device), meta


CASES = [
    # (query lens, context lens): decode rows, whole prompts, chunks at a context's end, mixed
    ([1, 1, 1, 1], [1, 16, 37, 300]),
    ([7, 1, 40, 1], [7, 120, 77, 5]),
    ([33], [300]),
]


@pytest.mark.parametrize("block_size", [4, 16])
@pytest.mark.parametrize("group", [2, 6])
@pytest.mark.parametrize("rows", range(len(CASES)))
def test_matches_twin(device, rows, group, block_size):
    q_lens, seq_lens = CASES[rows]
    q, cache, meta = _step(q_lens, seq_lens, 2, group, block_size, torch.float32, device, seed=rows)
    got = triton_attention.paged_attention(q, cache, meta, 0.25, 30.0)
    assert_relative_close(got, paged_attention(q, cache, meta, 0.25, 30.0))


@pytest.mark.parametrize("group", [2, 6])
def test_int8_pool_saturated_cap(device, group):
    """int8 keys and values with their per-row scales; logits of several hundred, which the soft
    cap squeezes to +-30, so the softmax is decided by the cap's saturation."""
    q, cache, meta = _step([5, 1, 1], [5, 120, 300], 1, group, 16, torch.int8, device, magnitude=20.0)
    got = triton_attention.paged_attention(q, cache, meta, 0.25, 30.0)
    assert_relative_close(got, paged_attention(q, cache, meta, 0.25, 30.0))
    no_cap = triton_attention.paged_attention(q, cache, meta, 0.05, None)
    assert_relative_close(no_cap, paged_attention(q, cache, meta, 0.05, None))


@pytest.mark.parametrize("splits", [2, 5])
def test_split_keys_decode(device, splits):
    q, cache, meta = _step([1, 1, 1], [1, 150, 300], 2, 6, 16, torch.float32, device)
    got = triton_attention.paged_attention(q, cache, meta, 0.25, 30.0, num_splits=splits)
    assert_relative_close(got, paged_attention(q, cache, meta, 0.25, 30.0))


def test_graph_decode_metadata(device):
    """``AttentionMetadata.for_decode``: every row reads all table columns (padded with a spare
    block) and is masked at its own length, from device tensors alone."""
    seq_lens = [3, 45, 200]
    q, cache, meta = _step([1, 1, 1], seq_lens, 2, 2, 16, torch.float32, device)
    width = meta.block_tables.shape[1] + 2
    tables = torch.full((3, width), cache.shape[1] - 1, dtype=torch.int64, device=device)
    tables[:, : meta.block_tables.shape[1]] = meta.block_tables
    padded = AttentionMetadata.for_decode(meta.slot_mapping, meta.seq_lens, tables, 16)
    got = triton_attention.paged_attention(q, cache, padded, 0.25, 30.0, num_splits=3)
    assert_relative_close(got, paged_attention(q, cache, meta, 0.25, 30.0))


def test_bf16(device):
    q, cache, meta = _step([7, 1], [7, 90], 2, 2, 16, torch.bfloat16, device, dtype=torch.bfloat16)
    got = triton_attention.paged_attention(q, cache, meta, 0.25, 30.0)
    assert got.dtype == torch.bfloat16
    # the twin rounds the normalised probabilities to bf16 before the product; the kernel does not
    assert_relative_close(got, paged_attention(q, cache, meta, 0.25, 30.0), 2e-2)


@pytest.mark.parametrize("splits", [1, 3])
def test_length_temperature_matches_twin(device, splits):
    """Grok-2's length temperature with a threshold of 64: decode rows and a prompt chunk whose
    queries sit before, at and past it (the factor is 1 up to position 64, log2(p)/6 after)."""
    q, cache, meta = _step([1, 1, 40, 1], [1, 64, 100, 300], 2, 6, 16, torch.float32, device, magnitude=3.0)
    got = triton_attention.paged_attention(q, cache, meta, 0.25, 30.0, temperature_len=64, num_splits=splits)
    want = paged_attention(q, cache, meta, 0.25, 30.0, temperature_len=64)
    assert_relative_close(got, want)
    assert not torch.allclose(want, paged_attention(q, cache, meta, 0.25, 30.0), atol=1e-3)
