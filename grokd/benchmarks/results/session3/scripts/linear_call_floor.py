"""Session 3 microbenchmark (benchmarks/RESULTS.md, "Session 3 CPU"): one batch-1 projection per
SmolLM2 shape (weights hot in cache), oneDNN-packed bf16 vs unpacked F.linear vs weight-only int8 vs
float32, to expose each path's fixed cost per call.

    .venv/bin/python benchmarks/results/session3/scripts/linear_call_floor.py
"""

import time

import torch
import torch.nn.functional as F
from kernels.linear import dense_linear, pack_weight, quantize_int8


def bench(f, n: int) -> float:
    for _ in range(100):
        f()
    t = time.perf_counter()
    for _ in range(n):
        f()
    return (time.perf_counter() - t) / n * 1e6


for out_f, in_f in ((192, 64), (960, 576), (576, 576), (3072, 576), (576, 1536), (49152, 576)):
    w = torch.randn(out_f, in_f).bfloat16()
    x = torch.randn(1, in_f).bfloat16()
    packed, int8, w32, x32 = pack_weight(w), quantize_int8(w, torch.bfloat16), w.float(), x.float()
    times = {
        "packed": bench(lambda: dense_linear(x, packed), 500),  # noqa: B023
        "F.linear bf16": bench(lambda: F.linear(x, w), 200),  # noqa: B023
        "int8": bench(lambda: dense_linear(x, int8), 500),  # noqa: B023
        "fp32": bench(lambda: F.linear(x32, w32), 200),  # noqa: B023
    }
    print(f"{out_f}x{in_f}: " + "  ".join(f"{k} {v:.1f} us" for k, v in times.items()))
