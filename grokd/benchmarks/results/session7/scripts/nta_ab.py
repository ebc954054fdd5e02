"""lm_head-sized matvec from two builds (interleaved): its time, and small torch ops right after it."""

import ctypes
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from kernels import cpu_build, cpu_linear

torch.set_num_threads(2)
rt = cpu_build.torch_openmp_runtime()
names = sys.argv[1].split(",")
libs = {}
for nm in names:
    cpu_build.SOURCE_DIR = Path(f"/tmp/s7/src_{nm}")
    libs[nm] = ctypes.CDLL(str(cpu_build.build("gcc", Path(f"/tmp/s7/b_{nm}"), rt, True)))
    cpu_build._declare(libs[nm])
w = cpu_linear.pack((torch.randn(49152, 576) * 0.05).bfloat16())
ws = [
    cpu_linear.pack((torch.randn(n, k) * 0.05).bfloat16())
    for n, k in ((960, 576), (576, 576), (3072, 576), (576, 1536))
] * 30
x = torch.randn(1, 1536).bfloat16()
out = torch.empty(1, 49152, dtype=torch.bfloat16)
emb = torch.randn(49152, 576).bfloat16()
ids = torch.tensor([5])
v = torch.randn(1, 576).bfloat16()
nw = torch.ones(576).bfloat16()


def small():
    t0 = time.perf_counter()
    F.embedding(ids, emb).float()
    (v.float() * v.float()).mean(-1)
    torch.argmax(out.float(), -1)
    return (time.perf_counter() - t0) * 1e6


res = {k: {"head": [], "layers": [], "small": []} for k in libs}
for rnd in range(60):
    for nm, lib in list(libs.items()) if rnd % 2 == 0 else list(libs.items())[::-1]:
        t0 = time.perf_counter()
        for p in ws:
            n, k = p.shape
            lib.grokd_linear_bf16(x.data_ptr(), 1, k, p.packed.data_ptr(), n, k, out.data_ptr(), 2)
        t1 = time.perf_counter()
        lib.grokd_linear_bf16(x.data_ptr(), 1, 576, w.packed.data_ptr(), 49152, 576, out.data_ptr(), 2)
        t2 = time.perf_counter()
        s = small()
        if rnd >= 4:
            res[nm]["layers"].append((t1 - t0) * 1e3)
            res[nm]["head"].append((t2 - t1) * 1e3)
            res[nm]["small"].append(s)
for nm in names:
    r = res[nm]
    print(
        f"{nm}: 30 layers' projections {statistics.median(r['layers']):.3f} ms, lm_head {statistics.median(r['head']):.3f} ms, small ops after {statistics.median(r['small']):.1f} us"
    )
