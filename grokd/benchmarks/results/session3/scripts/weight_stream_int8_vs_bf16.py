"""Session 3 microbenchmark (benchmarks/RESULTS.md, "Session 3 CPU"): stream every SmolLM2
projection once at batch 1 (random weights, 30 layers plus the head, far larger than the cache),
oneDNN-packed bf16 against weight-only int8, three alternating passes.

    .venv/bin/python benchmarks/results/session3/scripts/weight_stream_int8_vs_bf16.py
"""

import time

import torch
from kernels.linear import dense_linear, pack_weight, quantize_int8

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
weights = [torch.randn(o, i).bfloat16() for o, i in SHAPES]
forms = {"packed": [pack_weight(w) for w in weights], "int8": [quantize_int8(w, torch.bfloat16) for w in weights]}
nbytes = {"packed": sum(w.numel() * 2 for w in weights), "int8": sum(q.nbytes() for q in forms["int8"])}
xs = {576: torch.randn(1, 576).bfloat16(), 1536: torch.randn(1, 1536).bfloat16()}


def one_pass(ws: list) -> None:
    for w in ws:
        dense_linear(xs[w.shape[1]], w)


for _ in range(3):
    for name, ws in forms.items():
        one_pass(ws)
        t = time.perf_counter()
        for _ in range(5):
            one_pass(ws)
        dt = (time.perf_counter() - t) / 5
        print(f"{name}: {dt * 1e3:.2f} ms per pass, {nbytes[name] / dt / 1e9:.1f} GB/s")
for name, ws in forms.items():
    t = time.perf_counter()
    for _ in range(20):
        dense_linear(xs[576], ws[-1])
    print(f"{name} head: {(time.perf_counter() - t) / 20 * 1e3:.2f} ms")
