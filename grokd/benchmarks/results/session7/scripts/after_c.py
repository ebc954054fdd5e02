"""How long small ops take right after the big C call vs on their own."""

import os
import statistics
import time

import torch
import torch.nn.functional as F
from benchmarks.offline import build_engine, model_path

engine, _ = build_engine(model_path("default"), "bfloat16", 1, 2048 + 80, 0, "auto", kv_cache_dtype="auto")
m = engine.model
ids = torch.tensor([5])
pos = torch.tensor([100])
x = F.embedding(ids, m.embed_tokens).to(m.dtype)


def small():
    t0 = time.perf_counter()
    F.embedding(ids, m.embed_tokens).to(m.dtype)
    t1 = time.perf_counter()
    m.rope.tables(pos, m.dtype)
    t2 = time.perf_counter()
    m.norm(x)
    t3 = time.perf_counter()
    return (t1 - t0) * 1e6, (t2 - t1) * 1e6, (t3 - t2) * 1e6


alone = [small() for _ in range(200)][20:]
print(
    "alone: emb {:.1f} rope {:.1f} norm {:.1f} us".format(
        *tuple(statistics.median(a[i] for a in alone) for i in range(3))
    )
)
big = torch.randn(1024, 576).bfloat16()
w = m.output_weight
after = []
for _ in range(200):
    m.kernels.dense_linear(big[:1], w)  # 56 MB lm_head: a long C call on both threads
    after.append(small())
print(
    "after a C call: emb {:.1f} rope {:.1f} norm {:.1f} us".format(
        *tuple(statistics.median(a[i] for a in after[20:]) for i in range(3))
    )
)

print(
    "OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY"), "GOMP_SPINCOUNT", os.environ.get("GOMP_SPINCOUNT")
)
after = []
for _ in range(200):
    m.kernels.dense_linear(big[:1], w)
    time.sleep(0.003)
    after.append(small())
print(
    "after a C call + 3 ms sleep: emb {:.1f} rope {:.1f} norm {:.1f} us".format(
        *tuple(statistics.median(a[i] for a in after[20:]) for i in range(3))
    )
)
flush = torch.ones(16 << 20)
after = []
torch.set_num_threads(1)
for _ in range(100):
    flush.mul_(1.0001)  # 64 MB touched on one thread
    after.append(small())
torch.set_num_threads(2)
print(
    "after a 64 MB single-thread sweep: emb {:.1f} rope {:.1f} norm {:.1f} us".format(
        *tuple(statistics.median(a[i] for a in after[20:]) for i in range(3))
    )
)
