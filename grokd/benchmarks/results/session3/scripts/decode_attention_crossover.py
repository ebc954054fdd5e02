"""Session 3 microbenchmark (benchmarks/RESULTS.md, "Session 3 CPU"): per-layer decode attention,
the batched PyTorch path vs the in-place numba kernel, over batch sizes and context lengths.

    .venv/bin/python benchmarks/results/session3/scripts/decode_attention_crossover.py
"""

import time

import torch
from kernels import cpu_decode_attention as cda
from kernels.attention import kv_cache_shape
from kernels.batched_attention import batched_decode_attention
from kernels.metadata import AttentionMetadata


def bench(f, n: int = 300) -> float:
    for _ in range(30):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e6


CASES = ((1, 128), (1, 256), (1, 512), (1, 768), (1, 1024), (1, 2048), (2, 256), (2, 384), (4, 128),
         (4, 192), (4, 256), (8, 64), (8, 96), (8, 128), (16, 64))
for batch, ctx in CASES:
    per = -(-ctx // 16)
    cache = torch.randn(kv_cache_shape(batch * per + 4, 16, 3, 64)).bfloat16()  # SmolLM2's KV shape
    tables = [list(range(1 + i * per, 1 + (i + 1) * per)) for i in range(batch)]
    rows = AttentionMetadata.build([1] * batch, [ctx] * batch, tables, 16).decode_rows
    q = torch.randn(batch, 9, 64).bfloat16()
    t_torch = bench(lambda: batched_decode_attention(q, cache, rows, 0.125, None))  # noqa: B023
    t_numba = bench(lambda: cda.decode_attention(q, cache, rows, 0.125, None))  # noqa: B023
    print(f"B={batch:2d} ctx={ctx:4d} total={batch * ctx:5d}: torch {t_torch:7.1f} us  numba {t_numba:7.1f} us")
