"""Grok-2's length temperature in every attention path: the PyTorch reference against a dense
recomputation, and the batched decode, the C decode kernel (every pool type) and SDPA prefill
against the reference; prefill chunks whose queries start past the threshold included."""

from __future__ import annotations

import math

import pytest
import torch

from grokd.kernels import cpu_decode_attention as cda
from grokd.kernels.attention import (
    kv_cache_shape,
    length_temperature,
    paged_attention,
    quantize_kv,
    sequence_kv,
)
from grokd.kernels.batched_attention import batched_decode_attention, paged_attention_batched
from grokd.kernels.metadata import AttentionMetadata
from grokd.kernels.prefill_attention import paged_prefill_attention
from tests.kernels.paged_step import scattered_tables

L = 16
SCALE = 0.25
CAP = 30.0


def step(dtype, q_lens, seq_lens, kv_dtype=None, kv_heads=2, q_heads=8, head_dim=64, block_size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    tables, num_blocks = scattered_tables(seq_lens, block_size, g, spare=3)
    raw = torch.randn(kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), generator=g)
    cache = quantize_kv(raw) if kv_dtype == torch.int8 else raw.to(kv_dtype or dtype)
    meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size)
    q = (torch.randn(sum(q_lens), q_heads, head_dim, generator=g) * 3.0).to(dtype)
    return q, cache, meta


def test_multiplier_values():
    got = length_temperature(torch.tensor([0, 1, 15, 16, 17, 64, 1024]), L)
    want = [1.0, 1.0, 1.0, 1.0, math.log2(17) / 4, 1.5, 2.5]
    assert got.dtype == torch.float32 and got.tolist() == pytest.approx(want, rel=1e-6)
    assert length_temperature(torch.tensor([5000]), 0).tolist() == [1.0]


def test_reference_matches_dense_recomputation():
    """One sequence of 40 tokens whose last 30 are queries (a chunk starting at position 10)."""
    q, cache, meta = step(torch.float32, [30], [40])
    got = paged_attention(q, cache, meta, SCALE, CAP, temperature_len=L)
    keys, values = sequence_kv(cache, meta.block_tables[0, :3], 40)
    group = q.shape[1] // keys.shape[1]
    k = keys.repeat_interleave(group, dim=1)
    v = values.repeat_interleave(group, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * SCALE
    s = CAP * torch.tanh(s / CAP)
    pos = torch.arange(10, 40)
    temp = torch.where(pos > L, torch.log2(pos.float()) / math.log2(L), torch.ones(30))
    s = s * temp[None, :, None]
    s = s.masked_fill(torch.arange(40)[None, None, :] > pos[None, :, None], float("-inf"))
    want = torch.einsum("hts,shd->thd", s.softmax(-1), v)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, paged_attention(q, cache, meta, SCALE, CAP), atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_decode_and_mixed_step_match_reference(dtype):
    """Decode rows on both sides of the threshold, and a step mixing them with prefill chunks."""
    seq_lens = [3, 16, 17, 18, 40, 200]
    q, cache, meta = step(dtype, [1] * len(seq_lens), seq_lens)
    want = paged_attention(q, cache, meta, SCALE, CAP, temperature_len=L)
    got = batched_decode_attention(q, cache, meta.decode_rows, SCALE, CAP, L)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    q, cache, meta = step(dtype, [1, 9, 1, 20], [30, 25, 5, 20])
    want = paged_attention(q, cache, meta, SCALE, CAP, temperature_len=L)
    got = paged_attention_batched(q, cache, meta, SCALE, CAP, temperature_len=L)
    torch.testing.assert_close(got, want, atol=tol, rtol=tol)


@pytest.mark.c_kernels
@pytest.mark.parametrize(("dtype", "kv_dtype"), [(torch.float32, None), (torch.bfloat16, None),
                                                 (torch.float32, torch.int8), (torch.bfloat16, torch.int8)])
def test_c_decode_kernel_matches_reference(dtype, kv_dtype):
    """Rows from below the threshold to several chunks long (the int8 pool's one-pass walk in bf16
    mode where the CPU has VNNI), each with its own multiplier."""
    seq_lens = [2, 16, 17, 33, 300, 700]
    q, cache, meta = step(dtype, [1] * len(seq_lens), seq_lens, kv_dtype=kv_dtype)
    assert cda.supports(q, cache, meta.decode_rows)
    want = paged_attention(q, cache, meta, SCALE, CAP, temperature_len=L)
    got = cda.decode_attention(q, cache, meta.decode_rows, SCALE, CAP, L)
    if dtype == torch.float32 and kv_dtype is None:
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    elif dtype == torch.bfloat16 and kv_dtype == torch.int8:
        # VNNI quantizes q to int8 as well; a sharpened softmax (x2.36 at 700 tokens) amplifies
        # that: 0.06 without the temperature on these rows, 0.11 with it
        torch.testing.assert_close(got.float(), want.float(), atol=0.15, rtol=0.15)
    else:
        torch.testing.assert_close(got.float(), want.float(), atol=3e-2, rtol=3e-2)
    untempered = cda.decode_attention(q, cache, meta.decode_rows, SCALE, CAP, 0)
    assert not torch.allclose(got.float(), untempered.float(), atol=1e-2)


@pytest.mark.parametrize("softcap", [None, CAP])
def test_sdpa_prefill_matches_reference(softcap):
    """Without a cap the multiplier is folded into q's rows for SDPA; with one, the reference runs."""
    q, cache, meta = step(torch.float32, [12, 30, 7], [12, 45, 20])
    want = paged_attention(q, cache, meta, SCALE, softcap, temperature_len=L)
    got = paged_prefill_attention(q, cache, meta, SCALE, softcap, temperature_len=L)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
