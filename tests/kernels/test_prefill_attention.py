"""Prefill attention through SDPA against its twin, the per-sequence reference."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels.attention import kv_cache_shape, paged_attention, quantize_kv
from grokd.kernels.batched_attention import paged_attention_batched
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.prefill_attention import paged_prefill_attention
from tests.kernels.paged_step import scattered_tables


def prefill_step(query_lens: list[int], seq_lens: list[int], kv_heads: int, q_heads: int, head_dim: int,
                 block_size: int, dtype: torch.dtype, kv_dtype: torch.dtype, seed: int):
    g = torch.Generator().manual_seed(seed)
    tables, num_blocks = scattered_tables(seq_lens, block_size, g, spare=3)
    meta = AttentionMetadata.build(query_lens, seq_lens, tables, block_size)
    cache = torch.randn(kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), generator=g)
    cache = quantize_kv(cache) if kv_dtype == torch.int8 else cache.to(kv_dtype)
    q = torch.randn(sum(query_lens), q_heads, head_dim, generator=g).to(dtype)
    return q, cache, meta


@pytest.mark.parametrize("dtype, kv_dtype, tol", [
    (torch.float32, torch.float32, 2e-5),
    (torch.bfloat16, torch.bfloat16, 2e-2),
    (torch.bfloat16, torch.int8, 2e-2),
])
@pytest.mark.parametrize("heads", [(2, 6), (4, 4)])  # grouped-query and one query head per kv head
@pytest.mark.parametrize("block_size", [16, 5])
def test_matches_the_reference(dtype, kv_dtype, tol, heads, block_size):
    """Whole prompts and chunks after a cached prefix (queries aligned to the context's end), in one
    batch of sequences of different lengths, over scattered blocks."""
    kv_heads, q_heads = heads
    q, cache, meta = prefill_step([7, 40, 1, 23], [7, 100, 31, 23], kv_heads, q_heads, 32, block_size, dtype,
                                  kv_dtype, seed=block_size + q_heads)
    got = paged_prefill_attention(q, cache, meta, 32**-0.5)
    expected = paged_attention(q.float(), cache if kv_dtype == torch.int8 else cache.float(), meta, 32**-0.5)
    assert got.dtype == dtype and got.shape == q.shape
    torch.testing.assert_close(got.float(), expected.float(), atol=tol, rtol=tol)


def test_the_first_query_of_a_prompt_sees_only_itself():
    """Causal masking: with one context token, attention returns that token's value exactly."""
    q, cache, meta = prefill_step([5], [5], 1, 1, 32, 16, torch.float32, torch.float32, seed=1)
    got = paged_prefill_attention(q, cache, meta, 32**-0.5)
    block = meta.block_tables[0, 0]
    torch.testing.assert_close(got[0, 0], cache[1, block, 0, 0])


def test_soft_capped_attention_takes_the_reference():
    q, cache, meta = prefill_step([9, 4], [9, 30], 2, 4, 32, 16, torch.float32, torch.float32, seed=2)
    assert torch.equal(paged_prefill_attention(q, cache, meta, 0.2, softcap=30.0),
                       paged_attention(q, cache, meta, 0.2, softcap=30.0))


def test_cpu_kernels_route_prefill_rows_through_it():
    """A step with decode rows and a prefill chunk: the CPU kernel set gives the chunk SDPA's answer
    and the decode rows the decode kernel's, each within tolerance of the reference."""
    q, cache, meta = prefill_step([1, 12, 1], [40, 20, 17], 2, 6, 32, 16, torch.bfloat16, torch.bfloat16, seed=3)
    got = select_kernels("cpu").attention(q, cache, meta, scale=32**-0.5, softcap=None)
    sub, tokens = meta.multi_token_rows
    assert torch.equal(got[tokens], paged_prefill_attention(q[tokens], cache, sub, 32**-0.5))
    torch.testing.assert_close(got.float(), paged_attention(q.float(), cache.float(), meta, 32**-0.5),
                               atol=2e-2, rtol=2e-2)
    reference_set = paged_attention_batched(q, cache, meta, 32**-0.5)  # the default prefill: the reference
    assert torch.equal(reference_set[tokens], paged_attention(q[tokens], cache, sub, 32**-0.5))
