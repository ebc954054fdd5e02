"""Batch-1 decode step at ctx 128 with the stack: step, model forward, the C stack call, the output head, and the Python parts of the forward."""

import statistics
import threading
import time

import torch.nn.functional as F
from benchmarks.context_scaling import start_context, timed_step
from benchmarks.offline import build_engine, model_path
from kernels import cpu_build

engine, _ = build_engine(model_path("default"), "bfloat16", 1, 2048 + 80, 0, "auto", kv_cache_dtype="auto")
acc = {"fwd": 0.0, "c": 0.0, "lin": 0.0}
lib = cpu_build.library().lib
for name, key in (("grokd_decoder_layers_bf16", "c"), ("grokd_linear_bf16", "lin")):
    fn = getattr(lib, name)

    def w(*a, fn=fn, key=key):
        t = time.perf_counter()
        r = fn(*a)
        acc[key] += time.perf_counter() - t
        return r

    setattr(lib, name, w)

parts = {"emb": [], "rope": [], "stackpy": [], "norm": []}


def tf(self, input_ids, positions, kv_caches, meta):
    t0 = time.perf_counter()
    x = F.embedding(input_ids, self.embed_tokens).to(self.dtype)
    t1 = time.perf_counter()
    rope = self.rope.tables(positions, self.dtype)
    t2 = time.perf_counter()
    c0 = acc["c"]
    r = self.decoder_stack(x, *rope, kv_caches, meta)
    if r is None:
        for layer, kv in zip(self.layers, kv_caches, strict=False):
            x = layer(x, rope, kv, meta)
        return self.norm(x)
    t3 = time.perf_counter()
    out = r.normed
    t4 = time.perf_counter()
    parts["emb"].append(t1 - t0)
    parts["rope"].append(t2 - t1)
    parts["stackpy"].append(t3 - t2 - (acc["c"] - c0))
    parts["norm"].append(t4 - t3)
    acc["fwd"] += t4 - t0
    return out


type(engine.model).forward = tf
start_context(engine, 128, 1, 400, 1)
rows = []
for s in range(150):
    for k in acc:
        acc[k] = 0.0
    dt = timed_step(engine, 1)
    if s >= 10:
        rows.append((dt * 1e3, acc["fwd"] * 1e3, acc["c"] * 1e3, acc["lin"] * 1e3))
med = [statistics.median(r[i] for r in rows) for i in range(4)]
gap = statistics.median(r[0] - r[2] - r[3] for r in rows)
gapf = statistics.median(r[1] - r[2] for r in rows)
print(
    "step {:.3f} ms, forward {:.3f}, C stack {:.3f}, lm_head {:.3f}; per-step gap outside C: {:.3f}, in forward outside the stack: {:.3f}".format(
        *med, gap, gapf
    )
)
print({k: round(statistics.median(v[20:]) * 1e6, 1) for k, v in parts.items()}, "us")

print("threads:", [t.name for t in threading.enumerate()])
