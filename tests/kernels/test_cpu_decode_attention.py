"""The in-place C decode kernel against its twin, the per-sequence PyTorch reference."""

from __future__ import annotations

import pytest
import torch

from grokd.kernels import cpu_build
from grokd.kernels import cpu_decode_attention as cda
from grokd.kernels.attention import dequantize_kv, kv_cache_shape, paged_attention, quantize_kv
from grokd.kernels.batched_attention import paged_attention_batched
from grokd.kernels.dispatch import select_kernels
from grokd.kernels.metadata import AttentionMetadata
from tests.kernels.paged_step import scattered_tables

pytestmark = pytest.mark.c_kernels


def test_kernel_is_built_and_shares_torchs_threads():
    """gcc is on every supported machine: the kernel must build here, or CPU decode silently loses
    it; and it must run on torch's OpenMP team, not start a second one."""
    library = cpu_build.library()
    assert library is not None and library.path.exists()
    assert library.shares_torch_threads and library.threads() == torch.get_num_threads()
    assert cpu_build.resolved_openmp_file(library.lib) == cpu_build.torch_openmp_runtime()


def test_only_the_entry_points_are_exported():
    """The per-instruction-set kernels behind the four entry points are internal to the library."""
    lib = cpu_build.library().lib
    for name in cda._FUNCTIONS.values():
        assert hasattr(lib, name)
    for name in ("attn_scores_bf16_portable", "attn_values_i8_portable", "attn_scores_bf16_i8_avx512"):
        assert not hasattr(lib, name)


def random_step(dtype, q_lens, seq_lens, kv_heads=3, q_heads=9, head_dim=64, block_size=16, seed=0, kv_dtype=None,
                q_std=2.0):
    """A pool full of random (stale) values, scattered block tables, queries for ``q_lens``; the pool
    in ``kv_dtype`` (default: ``dtype``), an int8 one holding quantized random rows (never random
    bytes: their scale bytes could be a NaN)."""
    g = torch.Generator().manual_seed(seed)
    tables, num_blocks = scattered_tables(seq_lens, block_size, g, spare=5)
    raw = torch.randn(kv_cache_shape(num_blocks, block_size, kv_heads, head_dim), generator=g)
    cache = quantize_kv(raw) if kv_dtype == torch.int8 else raw.to(kv_dtype or dtype)
    meta = AttentionMetadata.build(q_lens, seq_lens, tables, block_size)
    q = (torch.randn(sum(q_lens), q_heads, head_dim, generator=g) * q_std).to(dtype)
    return q, cache, meta


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 30.0])
def test_matches_reference(dtype, softcap):
    seq_lens = [1, 16, 37, 129, 300]  # a single token, exact blocks, partial last blocks
    q, cache, meta = random_step(dtype, [1] * len(seq_lens), seq_lens)
    expected = paged_attention(q, cache, meta, scale=0.125, softcap=softcap)
    got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, softcap)
    assert got.dtype == dtype and got.shape == q.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:  # same roundings; a bf16 score may differ by one ulp where float32 sums reorder
        torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
        assert (got == expected).float().mean() > 0.95


def test_grouped_query_layouts():
    for kv_heads, q_heads, head_dim in ((1, 8, 32), (4, 4, 16), (2, 6, 128)):
        q, cache, meta = random_step(torch.float32, [1, 1], [20, 45], kv_heads, q_heads, head_dim, block_size=8)
        torch.testing.assert_close(cda.decode_attention(q, cache, meta.decode_rows, 0.3, None),
                                   paged_attention(q, cache, meta, scale=0.3), atol=1e-5, rtol=1e-5)


def test_strided_tables_and_lengths():
    """Tables and lengths that are views (every other row of a larger step) are read correctly."""
    q, cache, meta = random_step(torch.float32, [1] * 4, [9, 30, 17, 64], seed=5)
    rows = meta.decode_rows
    sub = type(rows)(rows.tokens[::2], rows.block_tables[::2], rows.seq_lens[::2], rows.bias[::2],
                     whole_batch=True, context_tokens=9 + 17)
    assert not sub.block_tables.is_contiguous() and not sub.seq_lens.is_contiguous()
    got = cda.decode_attention(q[::2], cache, sub, 0.125, None)
    torch.testing.assert_close(got, paged_attention(q, cache, meta, 0.125)[::2], atol=1e-5, rtol=1e-5)


def test_mixed_step_through_the_batched_entry_point():
    """Decode rows go to the kernel, the prefill chunk to the reference, in one step."""
    q, cache, meta = random_step(torch.bfloat16, [1, 4, 1], [40, 12, 9], seed=3)
    got = paged_attention_batched(q, cache, meta, 0.125, 30.0, decode=cda.decode_attention)
    torch.testing.assert_close(got.float(), paged_attention(q, cache, meta, 0.125, 30.0).float(),
                               atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("threads", [1, 2])
def test_long_contexts_split_into_chunks(threads):
    """Contexts over one chunk (256 tokens) are split across threads and their partial sums added:
    the answer must not depend on where the chunks fall or how many threads there are."""
    seq_lens = [255, 256, 257, 1000, 2100, 3]
    q, cache, meta = random_step(torch.bfloat16, [1] * len(seq_lens), seq_lens, seed=11)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, 30.0)
    finally:
        torch.set_num_threads(before)
    expected = paged_attention(q, cache, meta, 0.125, 30.0)
    torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert (got == expected).float().mean() > 0.95


def test_odd_head_dims_take_the_scalar_loops():
    for head_dim in (8, 48, 96):  # not a multiple of the 32-element vector step
        q, cache, meta = random_step(torch.bfloat16, [1, 1], [70, 300], 2, 4, head_dim, block_size=16, seed=head_dim)
        torch.testing.assert_close(cda.decode_attention(q, cache, meta.decode_rows, 0.2, None).float(),
                                   paged_attention(q, cache, meta, 0.2).float(), atol=2e-2, rtol=2e-2)


BF16_LAYOUTS = [(1, 1, 64), (2, 4, 64), (3, 9, 64), (2, 8, 64), (1, 2, 128), (2, 4, 128), (1, 3, 32), (2, 4, 96),
                (2, 4, 48)]


@pytest.mark.parametrize("block_size", [16, 8, 5])
@pytest.mark.parametrize("layout", BF16_LAYOUTS, ids=lambda layout: f"kv{layout[0]}-q{layout[1]}-d{layout[2]}")
def test_bf16_layouts_and_block_sizes(layout, block_size):
    """bf16 q and pool, which take vdpbf16ps where the CPU has it: every heads-per-pass and head-dim
    variant of the weighted sums, even block sizes (tokens in pairs, an odd last one paired with a
    zero row) and an odd one (the widened loops), contexts of one token, odd ones and over a chunk;
    one thread and two give the same bits."""
    kv_heads, q_heads, head_dim = layout
    seq_lens = [1, 2, 17, 31, 256, 300, 515]
    q, cache, meta = random_step(torch.bfloat16, [1] * len(seq_lens), seq_lens, kv_heads, q_heads, head_dim,
                                 block_size, seed=head_dim + block_size, q_std=1.0)
    scale = head_dim**-0.5
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(cda.decode_attention(q, cache, meta.decode_rows, scale, 30.0))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])
    expected = paged_attention(q, cache, meta, scale, 30.0)
    torch.testing.assert_close(results[0].float(), expected.float(), atol=2e-2, rtol=2e-2)
    assert (results[0] == expected).float().mean() > 0.95


def test_other_inputs_take_the_batched_path():
    q16, cache16, meta16 = random_step(torch.float16, [1], [10])
    assert not cda.supports(q16, cache16, meta16.decode_rows)
    q, cache, meta = random_step(torch.float32, [1, 1], [40, 7])
    wide = torch.randn(2, 9, 128)[:, :, ::2]  # a head dimension with stride 2
    assert cda.supports(q, cache, meta.decode_rows) and not cda.supports(wide, cache, meta.decode_rows)
    torch.testing.assert_close(cda.decode_attention_or_batched(wide, cache, meta.decode_rows, 0.125, None),
                               paged_attention(wide.contiguous(), cache, meta, scale=0.125), atol=1e-5, rtol=1e-5)


def test_cpu_dispatch_uses_it():
    q, cache, meta = random_step(torch.bfloat16, [1], [50])
    kernels = select_kernels("cpu")
    assert kernels.attention.keywords["decode"] is cda.decode_attention_or_batched
    torch.testing.assert_close(kernels.attention(q, cache, meta, 0.125).float(),
                               paged_attention(q, cache, meta, 0.125).float(), atol=2e-2, rtol=2e-2)


# int8 pools: rows of head_dim int8 values and their float32 scale, read as they lie

# SmolLM2's (GQA 3), a wide head, the scalar loops, one query head per kv head, Grok-1's group of 6 at dim 128
INT8_LAYOUTS = [(3, 9, 64), (2, 4, 128), (2, 6, 20), (2, 2, 64), (1, 6, 128)]


def int8_step(dtype, seq_lens, layout=(3, 9, 64), seed=0, q_lens=None):
    """A step on an int8 pool, with queries of unit variance (as after a norm and projection):
    with the softmax scale 1/sqrt(head_dim), the scores' spread of a real model."""
    kv_heads, q_heads, head_dim = layout
    return random_step(dtype, q_lens or [1] * len(seq_lens), seq_lens, kv_heads, q_heads, head_dim, seed=seed,
                       kv_dtype=torch.int8, q_std=1.0)


def assert_int8_close(got, q, cache, meta, scale, softcap):
    """Against the reference; in bf16 mode also against the reference in float32 (values int8 *
    scale exactly, as the kernel takes them; the bf16 reference rounds them to bf16 first, so it
    differs from the kernel by more than the kernel's own roundings)."""
    assert got.dtype == q.dtype and got.shape == q.shape
    expected = paged_attention(q, cache, meta, scale, softcap)
    if q.dtype == torch.float32:
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:
        torch.testing.assert_close(got.float(), expected.float(), atol=2e-2, rtol=2e-2)
        exact = paged_attention(q.float(), cache, meta, scale, softcap)
        torch.testing.assert_close(got.float(), exact, atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("layout", INT8_LAYOUTS, ids=lambda layout: f"kv{layout[0]}-q{layout[1]}-d{layout[2]}")
def test_int8_pool_matches_reference(dtype, softcap, layout):
    seq_lens = [1, 16, 37, 129, 300, 700]  # one token, exact blocks, partial blocks, several chunks
    q, cache, meta = int8_step(dtype, seq_lens, layout, seed=layout[2])
    assert cache.dtype == torch.int8 and cache.shape[-1] == layout[2] + 4
    assert cda.supports(q, cache, meta.decode_rows)
    scale = layout[2] ** -0.5
    got = cda.decode_attention(q, cache, meta.decode_rows, scale, softcap)
    assert_int8_close(got, q, cache, meta, scale, softcap)


@pytest.mark.parametrize("head_dim", [64, 128, 20])
def test_int8_pool_one_token_returns_its_dequantized_value(head_dim):
    """Over a single token the probability is exactly 1, so the output is that token's value row,
    int8 times its scale, exactly: the scale is read at the right offset and the values in order."""
    q, cache, meta = random_step(torch.float32, [1, 1], [1, 1], 2, 4, head_dim, seed=7, kv_dtype=torch.int8)
    got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, None)
    for row in range(2):
        block = meta.decode_rows.block_tables[row, 0]
        value = dequantize_kv(cache[1, block, :, 0], torch.float32)  # [kv_heads, head_dim], token 0
        assert torch.equal(got[row], value.repeat_interleave(2, dim=0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_pool_long_contexts_do_not_depend_on_threads(dtype):
    """Contexts over one chunk (256 tokens) are split across threads and their partial sums added
    in chunk order: one thread and two give the same bits, both close to the reference."""
    seq_lens = [255, 256, 257, 1000, 2100, 3]
    q, cache, meta = int8_step(dtype, seq_lens, seed=11)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            results.append(cda.decode_attention(q, cache, meta.decode_rows, 0.125, 30.0))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(results[0], results[1])
    assert_int8_close(results[0], q, cache, meta, 0.125, 30.0)


@pytest.mark.parametrize("block_size", [5, 16, 512])
def test_int8_pool_every_block_size_matches_reference(block_size):
    """bf16 q over an int8 pool: even blocks of at most 256 tokens a chunk take the one-pass path
    (q quantized, VNNI scores and values, chunks merged by their maxima); odd ones and blocks over a
    chunk the four phases. Both within bf16 precision of the float32 reference."""
    seq_lens = [3, 200, 600, 1100]
    q, cache, meta = random_step(torch.bfloat16, [1] * 4, seq_lens, block_size=block_size, seed=block_size,
                                 kv_dtype=torch.int8, q_std=1.0)
    got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, 30.0)
    assert_int8_close(got, q, cache, meta, 0.125, 30.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_pool_groups_over_sixteen_heads_take_the_four_phases(dtype):
    """More than 16 query heads per kv head is past the one-pass kernel's scratch: the four phases,
    whose weighted sums still take the VNNI loop where the CPU has it (20 heads: passes of 4)."""
    q, cache, meta = int8_step(dtype, [1, 37, 300, 600], layout=(1, 20, 64), seed=13)
    got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, 30.0)
    assert_int8_close(got, q, cache, meta, 0.125, 30.0)


def test_int8_pool_a_non_finite_query_head_gives_nan_only_there():
    """A NaN in one query head cannot be quantized: that item's scores take the bf16 path, which
    carries the NaN to that head's output, as the reference does; the other heads stay exact."""
    q, cache, meta = int8_step(torch.bfloat16, [700, 40], seed=5)
    q[0, 4, 7] = float("nan")
    got = cda.decode_attention(q, cache, meta.decode_rows, 0.125, None)
    assert torch.isnan(got[0, 4]).all()
    finite = torch.ones(2, 9, dtype=torch.bool)
    finite[0, 4] = False
    assert not torch.isnan(got[finite]).any()
    expected = paged_attention(q.float(), cache, meta, 0.125)
    torch.testing.assert_close(got.float()[finite], expected[finite], atol=2e-2, rtol=2e-2)


def test_int8_pool_takes_the_kernel(monkeypatch):
    """``decode_attention_or_batched`` sends an int8 pool with bf16 or float32 q to the C kernel
    (the batched path is stubbed to fail), and what it cannot read to the batched path."""
    def no_batched(*args, **kwargs):
        raise AssertionError("an int8 pool the kernel reads went to the batched path")

    for dtype in (torch.bfloat16, torch.float32):
        q, cache, meta = int8_step(dtype, [40, 300], seed=2)
        assert cda.supports(q, cache, meta.decode_rows)
        with monkeypatch.context() as m:
            m.setattr(cda, "batched_decode_attention", no_batched)
            got = cda.decode_attention_or_batched(q, cache, meta.decode_rows, 0.125, None)
        assert_int8_close(got, q, cache, meta, 0.125, None)
    q16, cache, meta = random_step(torch.float16, [1], [10], kv_dtype=torch.int8)
    assert not cda.supports(q16, cache, meta.decode_rows)  # no float16 kernel: the batched path
    wide = torch.randn(2, 9, 128)[:, :, ::2]  # a head dimension with stride 2
    _, cache, meta = random_step(torch.float32, [1, 1], [40, 7], kv_dtype=torch.int8)
    assert not cda.supports(wide, cache, meta.decode_rows)
    torch.testing.assert_close(cda.decode_attention_or_batched(wide, cache, meta.decode_rows, 0.125, None),
                               paged_attention(wide.contiguous(), cache, meta, 0.125), atol=1e-5, rtol=1e-5)


def test_int8_pool_mixed_step_through_cpu_dispatch():
    """Through the CPU kernels a model gets: decode rows to this kernel, the prefill chunk to the
    reference, one int8 pool."""
    q, cache, meta = int8_step(torch.bfloat16, [40, 12, 300], seed=3, q_lens=[1, 4, 1])
    got = select_kernels("cpu").attention(q, cache, meta, 0.125, 30.0)
    torch.testing.assert_close(got.float(), paged_attention(q, cache, meta, 0.125, 30.0).float(),
                               atol=2e-2, rtol=2e-2)
