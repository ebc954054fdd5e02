"""A/B of decode attention variants: new (current source) vs old (-DGROKD_NO_VNNI), interleaved, cold (30 pools in turn) and hot."""

import ctypes
import os
import shutil
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
libs = {}
srcs = {
    "new": os.environ.get("NEW_SRC", str(cpu_build.SOURCE_DIR)),
    "old": os.environ.get("OLD_SRC", str(cpu_build.SOURCE_DIR)),
}
ccs = {
    "new": "gcc",
    "old": os.environ.get("OLD_CC", "/tmp/ab/cc_novnni" if "OLD_SRC" not in os.environ else "gcc"),
}
for name in ("new", "old"):
    d = Path(f"/tmp/ab/build_{name}")
    shutil.rmtree(d, ignore_errors=True)
    cpu_build.SOURCE_DIR = Path(srcs[name])
    libs[name] = ctypes.CDLL(str(cpu_build.build(ccs[name], d, rt, True)))
    cpu_build._declare(libs[name])
ctx = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 1
kvh, qh, dim = (int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "3,9,64").split(","))
bs = int(os.environ.get("BS", "16"))
g = torch.Generator().manual_seed(0)
nb = rows * ctx // bs
pools, metas = [], []
for _ in range(30):
    perm = (
        (torch.arange(nb) if os.environ.get("SEQ") else torch.randperm(nb + 8, generator=g)[:nb])
        .view(rows, -1)
        .tolist()
    )
    c = torch.randn(kv_cache_shape(nb + 8, bs, kvh, dim), generator=g)
    pools.append(quantize_kv(c))
    metas.append(AttentionMetadata.build([1] * rows, [ctx] * rows, perm, bs))
q = torch.randn(rows, qh, dim, generator=g).bfloat16()


def call(lib, p, m):
    r = m.decode_rows
    out = torch.empty_like(q)
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
        q.data_ptr(), p.data_ptr(), r.block_tables.data_ptr(), r.seq_lens.data_ptr(), sh, out.data_ptr(), 2
    )
    return out


ref = paged_attention(q.float(), pools[0], metas[0], dim**-0.5).float()
for name, lib in libs.items():
    err = (call(lib, pools[0], metas[0]).float() - ref).abs().max().item()
    print(f"{name}: max abs err vs fp32 reference {err:.4f}")
flush = torch.ones(9 << 18)  # 9 MB: one layer of weights
res = {k: {"cold": [], "hot": []} for k in libs}
for rnd in range(12):
    for name, lib in libs.items() if rnd % 2 == 0 else reversed(list(libs.items())):
        ts = []
        for p, m in zip(pools, metas, strict=True):
            flush.sum()
            t0 = time.perf_counter()
            call(lib, p, m)
            ts.append(time.perf_counter() - t0)
        res[name]["cold"].append(statistics.median(ts))
        ts = []
        for _ in range(30):
            t0 = time.perf_counter()
            call(lib, pools[0], metas[0])
            ts.append(time.perf_counter() - t0)
        res[name]["hot"].append(statistics.median(ts))
for kind in ("cold", "hot"):
    n, o = statistics.median(res["new"][kind]) * 1e6, statistics.median(res["old"][kind]) * 1e6
    ratios = sorted(a / b for a, b in zip(res["new"][kind], res["old"][kind], strict=True))
    print(
        f"{rows}x{ctx} {kind}: new {n:.1f} us old {o:.1f} us  new/old median {statistics.median(ratios):.3f} range {ratios[0]:.3f}-{ratios[-1]:.3f}"
    )
