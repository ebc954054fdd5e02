"""The paged reference must equal plain causal attention over a contiguous context."""

import torch

from kernels.attention import kv_cache_shape, paged_attention, write_kv
from kernels.metadata import AttentionMetadata


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
    from kernels.batched_attention import paged_attention_batched

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
