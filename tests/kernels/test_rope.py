"""RoPE with the KV write: the C kernel against its twin, the PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels import cpu_build, rope
from grokd.kernels.attention import dequantize_kv, kv_cache_shape, quantize_kv
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.metadata import AttentionMetadata
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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("q_lens", [[1, 1, 1], [40, 1, 7]])
def test_int8_pool_is_quantized_exactly_as_the_reference_does(dtype, q_lens):
    """Into an int8 pool the C kernel writes the same bytes as ``quantize_kv`` (values and scale)."""
    qkv, cos, sin, cache, meta = step(dtype, q_lens, [45, 70, 33])
    pool = quantize_kv(cache.float())  # stale but valid rows
    assert pool.dtype == torch.int8 and pool.shape[-1] == 64 + 4
    ref_pool, fast_pool = pool.clone(), pool.clone()
    expected = rope.rope_write_kv(qkv.clone(), 9, 3, cos, sin, ref_pool, meta)
    got = rope.rope_write_kv_cpu(qkv.clone(), 9, 3, cos, sin, fast_pool, meta)
    if dtype == torch.bfloat16:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    written = torch.zeros(pool.shape[1] * pool.shape[3], dtype=torch.bool)
    written[meta.slot_mapping] = True
    mask = written.view(pool.shape[1], 1, pool.shape[3]).expand(pool.shape[1:4])
    assert not torch.equal(fast_pool[:, mask], pool[:, mask])
    assert torch.equal(fast_pool[:, ~mask], pool[:, ~mask])  # only the tokens' slots changed
    if dtype == torch.bfloat16:  # bf16 keys are exact in float32: the very same bytes
        assert torch.equal(fast_pool, ref_pool)
    else:  # float32 RoPE may differ in the last bit, so a value may round to the next integer
        diff = (fast_pool[..., :64].int() - ref_pool[..., :64].int()).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    # and what it wrote dequantizes to the rotated keys and the values, within a quantization step
    t = sum(q_lens)
    keys = qkv[:, 9 * 64 : 12 * 64].view(t, 3, 64)
    slots = meta.slot_mapping
    values = qkv.float()[:, 12 * 64 :].view(t, 3, 64)
    stored_v = dequantize_kv(fast_pool[1].transpose(1, 2).reshape(-1, 3, 68)[slots], torch.float32)
    half_step = values.abs().amax(-1, keepdim=True) / 254
    assert ((stored_v - values).abs() <= half_step * 1.001).all()
    stored_k = dequantize_kv(fast_pool[0].transpose(1, 2).reshape(-1, 3, 68)[slots], torch.float32)
    rotated = rope.apply_rope(keys.to(dtype), cos, sin).float()
    assert ((stored_k - rotated).abs() <= rotated.abs().amax(-1, keepdim=True) / 254 * 1.001 + 1e-6).all()


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
    """The C kernel where the CPU tier has C kernels, the PyTorch twin elsewhere (generic, aarch64)."""
    expected = rope.rope_write_kv_cpu if cpu_build.available() else rope.rope_write_kv
    assert select_kernels("cpu").rope_write_kv is expected
