"""Interleaved A/B/C... of int8-pool decode attention builds: hot and cold (9 MB flush), SmolLM2 shape, 1 x CTX."""

import ctypes
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from kernels import cpu_build
from kernels.attention import kv_cache_shape, paged_attention, quantize_kv
from kernels.metadata import AttentionMetadata

torch.set_num_threads(2)
rt = cpu_build.torch_openmp_runtime()
names = sys.argv[1].split(",")
ctx = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
thr = int(os.environ.get("THR", "2"))
libs = {}
for nm in names:
    d = Path(f"/tmp/s7/b_{nm}")
    cpu_build.SOURCE_DIR = Path(f"/tmp/s7/src_{nm}")
    libs[nm] = ctypes.CDLL(str(cpu_build.build("gcc", d, rt, True)))
    cpu_build._declare(libs[nm])
kvh, qh, dim, bs, rows = 3, 9, 64, 16, 1
g = torch.Generator().manual_seed(0)
nb = ctx // bs
pools, metas = [], []
for _ in range(30):
    perm = (
        (torch.arange(nb) if os.environ.get("SEQ") else torch.randperm(nb + 8, generator=g)[:nb])
        .view(1, -1)
        .tolist()
    )
    pools.append(quantize_kv(torch.randn(kv_cache_shape(nb + 8, bs, kvh, dim), generator=g)))
    metas.append(AttentionMetadata.build([1], [ctx], perm, bs))
q = torch.randn(rows, qh, dim, generator=g).bfloat16()
out = torch.empty_like(q)


def call(lib, p, m):
    r = m.decode_rows
    sh = cpu_build.Shape(
        rows,
        qh,
        kvh,
        bs,
        dim,
        p.shape[1],
        q.stride(0),
        q.stride(1),
        r.block_tables.stride(0),
        r.seq_lens.stride(0),
        dim**-0.5,
        0.0,
        1,
    )
    lib.grokd_decode_attention_bf16_i8(
        q.data_ptr(), p.data_ptr(), r.block_tables.data_ptr(), r.seq_lens.data_ptr(), sh, out.data_ptr(), thr
    )
    return out


ref = paged_attention(q.float(), pools[0], metas[0], dim**-0.5).float()
for nm, lib in libs.items():
    print(f"{nm}: max abs err {(call(lib, pools[0], metas[0]).float() - ref).abs().max().item():.4f}")
flush = torch.ones(9 << 18)
res = {k: {"cold": [], "hot": []} for k in libs}
order = list(libs.items())
for rnd in range(int(os.environ.get("ROUNDS", "10"))):
    for nm, lib in order if rnd % 2 == 0 else order[::-1]:
        ts = []
        for p, m in zip(pools, metas, strict=False):
            flush.sum()
            t0 = time.perf_counter()
            call(lib, p, m)
            ts.append(time.perf_counter() - t0)
        res[nm]["cold"].append(statistics.median(ts))
        ts = []
        for _ in range(40):
            t0 = time.perf_counter()
            call(lib, pools[0], metas[0])
            ts.append(time.perf_counter() - t0)
        res[nm]["hot"].append(statistics.median(ts))
base = names[0]
for kind in ("cold", "hot"):
    line = [f"{kind}:"]
    for nm in names:
        r = sorted(a / b for a, b in zip(res[nm][kind], res[base][kind], strict=False))
        line.append(
            f"{nm} {statistics.median(res[nm][kind]) * 1e6:.1f}us ({statistics.median(r):.3f} [{r[0]:.2f}-{r[-1]:.2f}])"
        )
    print("  ".join(line))
