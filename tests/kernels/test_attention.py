"""The paged reference must equal plain causal attention over a contiguous context."""

import torch

from grokd.kernels.attention import (
    dequantize_kv,
    kv_cache_shape,
    kv_head_dim,
    paged_attention,
    quantize_kv,
    sequence_kv,
    write_kv,
)
from grokd.kernels.metadata import AttentionMetadata


def dense_attention(q, k, v, scale, softcap):
    t, h, d = q.shape
    kv = k.shape[1]
    k = k.repeat_interleave(h // kv, dim=1)
    v = v.repeat_interleave(h // kv, dim=1)
    s = torch.einsum("thd,shd->hts", q, k) * scale
    s = softcap * torch.tanh(s / softcap)
    mask = torch.ones(t, t, dtype=torch.bool).tril()
    s = s.masked_fill(~mask, float("-inf"))
    return torch.einsum("hts,shd->thd", torch.softmax(s, -1), v)


def test_paged_matches_dense_with_chunked_prefill_and_scattered_blocks(device):
    torch.manual_seed(0)
    block_size, kv_heads, q_heads, d = 4, 2, 6, 8
    cache = torch.zeros(kv_cache_shape(16, block_size, kv_heads, d), device=device)
    lens = [7, 10]
    tables = [[5, 2], [9, 0, 13]]  # deliberately non-contiguous
    qs = [torch.randn(n, q_heads, d) for n in lens]
    ks = [torch.randn(n, kv_heads, d) for n in lens]
    vs = [torch.randn(n, kv_heads, d) for n in lens]
    expected = [dense_attention(q, k, v, 0.3, 30.0) for q, k, v in zip(qs, ks, vs, strict=True)]

    # step 1: first 3 tokens of each; step 2: the rest (chunked prefill)
    for lo, hi in ((0, 3), (3, None)):
        q_lens = [len(q[lo:hi]) for q in qs]
        seq_lens = [lo + n for n in q_lens]
        meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size, device=device)
        write_kv(cache, torch.cat([k[lo:hi] for k in ks]).to(device), torch.cat([v[lo:hi] for v in vs]).to(device), meta)
        out = paged_attention(torch.cat([q[lo:hi] for q in qs]).to(device), cache, meta, scale=0.3, softcap=30.0)
        got = torch.split(out.cpu(), q_lens)
        for g, e in zip(got, expected, strict=True):
            torch.testing.assert_close(g, e[lo:hi], atol=1e-5, rtol=1e-5)


def test_batched_decode_rows_match_the_reference_in_a_mixed_step(device):
    """Decode rows of different lengths plus a prefill chunk: batched path == per-sequence reference
    (on CUDA: the device's batched path against the CPU reference)."""
    from grokd.kernels.batched_attention import paged_attention_batched

    torch.manual_seed(1)
    block_size, kv_heads, q_heads, d = 4, 2, 6, 8
    for dtype in (torch.float32, torch.bfloat16):
        cache = torch.randn(kv_cache_shape(32, block_size, kv_heads, d)).to(dtype)  # stale data everywhere
        tables = [[3, 7, 1], [12], [5, 9, 20, 21, 22], [30, 31]]
        q_lens = [1, 1, 3, 1]
        seq_lens = [9, 2, 19, 8]
        meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size)
        q = torch.randn(sum(q_lens), q_heads, d).to(dtype)
        expected = paged_attention(q, cache, meta, scale=0.3, softcap=30.0)
        dev_meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size, device=device)
        got = paged_attention_batched(q.to(device), cache.to(device), dev_meta, scale=0.3, softcap=30.0).cpu()
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        torch.testing.assert_close(got, expected, atol=tol, rtol=tol)


def test_int8_rows_hold_values_and_scale_and_round_trip_within_half_a_step():
    torch.manual_seed(2)
    x = torch.randn(7, 3, 64) * torch.tensor([0.01, 1.0, 300.0])[:, None]  # very different magnitudes
    x[0, 0] = 0.0  # an all-zero row: scale 1, values 0
    rows = quantize_kv(x)
    assert rows.dtype == torch.int8 and rows.shape == (7, 3, 68)
    scale = rows[..., 64:].contiguous().view(torch.float32)
    assert scale[0, 0].item() == 1.0 and not rows[0, 0, :64].any()
    torch.testing.assert_close(scale[1:], x[1:].abs().amax(-1, keepdim=True) / 127)
    assert rows[..., :64].abs().max() == 127  # the largest value of each row uses the full range
    back = dequantize_kv(rows, torch.float32)
    assert ((back - x).abs() <= scale / 2 * 1.0001).all()
    assert dequantize_kv(rows, torch.bfloat16).dtype == torch.bfloat16


def test_int8_pool_layout_and_attention_close_to_bf16(device):
    """An int8 pool: rows 4 bytes wider, written quantized, read back dequantized by both the
    per-sequence reference and the batched decode path (on CUDA: the device's batched path, as
    decode graphs replay it), within int8 error of the bf16 pool."""
    from grokd.kernels.batched_attention import paged_attention_batched

    torch.manual_seed(3)
    block_size, kv_heads, q_heads, d = 4, 2, 6, 16
    pool8 = torch.zeros(kv_cache_shape(16, block_size, kv_heads, d, torch.int8), dtype=torch.int8, device=device)
    pool16 = torch.zeros(kv_cache_shape(16, block_size, kv_heads, d, torch.bfloat16), dtype=torch.bfloat16,
                         device=device)
    assert pool8.shape[-1] == d + 4 and pool16.shape[-1] == d and kv_head_dim(pool8) == kv_head_dim(pool16) == d
    tables, lens = [[5, 2, 7], [9, 0, 13, 1]], [10, 13]
    meta = AttentionMetadata.build(lens, lens, tables, block_size, device=device)
    k, v = torch.randn(2, sum(lens), kv_heads, d).bfloat16().to(device)
    write_kv(pool8, k, v, meta)
    write_kv(pool16, k, v, meta)
    keys, values = sequence_kv(pool8, meta.block_tables[1, :4], 13, torch.float32)
    assert keys.shape == (13, kv_heads, d) and keys.dtype == torch.float32
    torch.testing.assert_close(keys, k[10:].float(), atol=0.02, rtol=0)
    torch.testing.assert_close(values, v[10:].float(), atol=0.02, rtol=0)
    q = torch.randn(sum(lens), q_heads, d).bfloat16().to(device)
    got, ref = paged_attention(q, pool8, meta, 0.25), paged_attention(q, pool16, meta, 0.25)
    assert got.dtype == torch.bfloat16 and not torch.equal(got, ref)  # int8 really was read
    torch.testing.assert_close(got.float(), ref.float(), atol=0.05, rtol=0.05)
    decode = AttentionMetadata.build([1, 1], lens, tables, block_size, device=device)
    q1 = torch.randn(2, q_heads, d).bfloat16().to(device)
    torch.testing.assert_close(paged_attention_batched(q1, pool8, decode, 0.25),
                               paged_attention(q1, pool8, decode, 0.25), atol=1e-2, rtol=1e-2)
