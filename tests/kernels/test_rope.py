"""RoPE with the KV write: the C kernel against its twin, the PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from kernels import rope
from kernels.attention import kv_cache_shape
from kernels.dispatch import select_kernels
from kernels.metadata import AttentionMetadata
from tests.kernels.paged_step import scattered_tables


def step(dtype, q_lens, seq_lens, heads=9, kv_heads=3, head_dim=64, block_size=16, seed=0):
    """A qkv projection output, RoPE tables at the tokens' positions, a stale pool, metadata."""
    g = torch.Generator().manual_seed(seed)
    tables, num_blocks = scattered_tables(seq_lens, block_size, g, spare=3)
    meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size)
    t = sum(q_lens)
    qkv = (torch.randn(t, (heads + 2 * kv_heads) * head_dim, generator=g) * 3).to(dtype)
    positions = torch.cat([torch.arange(s - q, s) for q, s in zip(q_lens, seq_lens, strict=True)])
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = positions[:, None].float() * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[:, None].to(dtype), emb.sin()[:, None].to(dtype)
    cache = torch.randn(kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), generator=g).to(dtype)
    return qkv, cos, sin, cache, meta


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("q_lens", [[1, 1, 1], [40, 1, 7]])  # decode rows; a prefill chunk (threads)
def test_matches_reference(dtype, q_lens):
    qkv, cos, sin, cache, meta = step(dtype, q_lens, [45, 70, 33])
    ref_cache, fast_cache = cache.clone(), cache.clone()
    expected = rope.rope_write_kv(qkv.clone(), 9, 3, cos, sin, ref_cache, meta)
    got = rope.rope_write_kv_cpu(qkv.clone(), 9, 3, cos, sin, fast_cache, meta)
    assert got.shape == expected.shape == (sum(q_lens), 9, 64) and got.dtype == dtype
    if dtype == torch.bfloat16:  # the same roundings: bit-identical queries, keys and values
        assert torch.equal(got, expected) and torch.equal(fast_cache, ref_cache)
    else:  # float32: a fused multiply-add may differ in the last bit
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast_cache, ref_cache, atol=1e-5, rtol=1e-5)
    assert not torch.equal(fast_cache, cache)  # something was written, and only the tokens' slots:
    written = torch.zeros(cache.shape[1] * cache.shape[3], dtype=torch.bool)
    written[meta.slot_mapping] = True
    untouched = ~written.view(cache.shape[1], 1, cache.shape[3], 1).expand(cache.shape[1:])
    assert torch.equal(fast_cache[:, untouched], cache[:, untouched])


def test_inputs_it_does_not_take_go_to_the_reference():
    qkv, cos, sin, cache, meta = step(torch.float16, [1, 2], [4, 9])  # float16
    ref_cache = cache.clone()
    expected = rope.rope_write_kv(qkv.clone(), 9, 3, cos, sin, ref_cache, meta)
    got = rope.rope_write_kv_cpu(qkv.clone(), 9, 3, cos, sin, cache, meta)
    assert torch.equal(got, expected) and torch.equal(cache, ref_cache)
    qkv, cos, sin, cache, meta = step(torch.bfloat16, [1], [4], head_dim=1024)  # over the kernel's MAX_DIM
    ref_cache = cache.clone()
    got = rope.rope_write_kv_cpu(qkv.clone(), 9, 3, cos, sin, cache, meta)
    assert torch.equal(got, rope.rope_write_kv(qkv.clone(), 9, 3, cos, sin, ref_cache, meta))
    assert torch.equal(cache, ref_cache)


def test_cpu_dispatch_uses_it():
    assert select_kernels("cpu").rope_write_kv is rope.rope_write_kv_cpu
