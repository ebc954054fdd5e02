"""In-process interleaved A/B/C: weights in an arena of huge pages / huge pages only for >= 2 MiB tensors / 4 KiB pages."""

import mmap
import statistics
import sys

from benchmarks.context_scaling import finish, start_context, timed_step
from benchmarks.offline import build_engine, model_path
from engine.llm_engine import LLMEngine
from kernels import host_memory

kvd = sys.argv[1] if len(sys.argv) > 1 else "int8"
ctxs = [int(c) for c in (sys.argv[2] if len(sys.argv) > 2 else "128,2048").split(",")]
batch = int(sys.argv[3]) if len(sys.argv) > 3 else 1
real_anon, real_copy = host_memory.anonymous, host_memory.Arena.copy
variants = {}
for name in ("arena", "large", "4k"):
    host_memory.anonymous = (
        real_anon
        if name != "4k"
        else (lambda n: mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS))
    )
    host_memory.Arena.copy = real_copy if name == "arena" else (lambda self, t: host_memory.copy(t))
    e, _ = build_engine(
        model_path("default"), "bfloat16", batch, max(ctxs) + 80, 0, "auto", kv_cache_dtype=kvd
    )
    variants[name] = {
        c: e if i == 0 else LLMEngine(e.config, e.model, e.tokenizer, checkpoint=e.checkpoint)
        for i, c in enumerate(ctxs)
    }
host_memory.anonymous, host_memory.Arena.copy = real_anon, real_copy
times = {(v, c): [] for v in variants for c in ctxs}
keys = list(times)
for rnd in range(3):
    for v, c in keys:
        start_context(variants[v][c], c, batch, 50, rnd * 7 + c)
    for s in range(45):
        order = keys[s % len(keys) :] + keys[: s % len(keys)]
        for k in order:
            dt = timed_step(variants[k[0]][k[1]], batch)
            if s >= 5:
                times[k].append(dt * 1e3)
    for v, c in keys:
        finish(variants[v][c])
for v in variants:
    print(
        f"{kvd} b{batch} {v}: " + "  ".join(f"{c}: {statistics.median(times[(v, c)]):.3f} ms" for c in ctxs)
    )
