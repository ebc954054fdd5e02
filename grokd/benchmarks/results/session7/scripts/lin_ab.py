"""Interleaved A/B of grokd_linear_bf16 builds on SmolLM2's projection shapes, ROWS rows; GFLOP/s."""

import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from kernels import cpu_build, cpu_linear

torch.set_num_threads(2)
rt = cpu_build.torch_openmp_runtime()
names = sys.argv[1].split(",")
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
libs = {}
for nm in names:
    cpu_build.SOURCE_DIR = Path(f"/tmp/s7/src_{nm}")
    libs[nm] = ctypes.CDLL(str(cpu_build.build("gcc", Path(f"/tmp/s7/b_{nm}"), rt, True)))
    cpu_build._declare(libs[nm])
g = torch.Generator().manual_seed(0)
shapes = [(960, 576), (576, 576), (3072, 576), (576, 1536)]  # qkv, o, gate+up, down
ws = [(torch.randn(o, i, generator=g) * 0.05).bfloat16() for o, i in shapes]
ps = [cpu_linear.pack(w) for w in ws]
xs = [torch.randn(rows, i, generator=g).bfloat16() for _, i in shapes]
outs = [torch.empty(rows, o, dtype=torch.bfloat16) for o, _ in shapes]
flops = sum(2 * rows * o * i for o, i in shapes)


def run(lib):
    for x, p, o, (n, k) in zip(xs, ps, outs, shapes, strict=False):
        lib.grokd_linear_bf16(x.data_ptr(), rows, x.stride(0), p.packed.data_ptr(), n, k, o.data_ptr(), 2)


for nm, lib in libs.items():
    run(lib)
    err = max(
        ((o.float() - (x.float() @ w.float().T)).abs().max() / (x.float() @ w.float().T).abs().max()).item()
        for o, x, w in zip(outs, xs, ws, strict=False)
    )
    print(f"{nm}: max rel err {err:.2e}")
res = {k: [] for k in libs}
reps = max(1, 4096 // rows)
for rnd in range(int(os.environ.get("ROUNDS", "10"))):
    for nm, lib in list(libs.items()) if rnd % 2 == 0 else list(libs.items())[::-1]:
        ts = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                run(lib)
            ts.append((time.perf_counter() - t0) / reps)
        res[nm].append(min(ts))
base = names[0]
print(
    f"{rows} rows: "
    + "  ".join(
        f"{nm} {flops / statistics.median(res[nm]) / 1e9:.0f} GFLOP/s ({statistics.median(sorted(a / b for a, b in zip(res[nm], res[base], strict=False))):.3f}x time)"
        for nm in names
    )
)
