"""In-process A/B of prefill attention: the per-sequence reference against SDPA, alternating, timing
one prompt of CONTEXT tokens from its first step to its first decode step (default model, bf16)."""

import dataclasses
import statistics
import sys
import time
from functools import partial

from benchmarks.context_scaling import finish, start_context
from benchmarks.offline import build_engine, model_path
from kernels.attention import paged_attention
from kernels.batched_attention import paged_attention_batched
from kernels.cpu_decode_attention import decode_attention_or_batched
from kernels.prefill_attention import paged_prefill_attention

context = int(sys.argv[1]) if len(sys.argv) > 1 else 1024
engine, _ = build_engine(model_path("default"), "bfloat16", 1, context + 80, 0, "auto", kv_cache_dtype="auto")
kernels = engine.model.kernels
sets = {
    name: dataclasses.replace(kernels, attention=partial(paged_attention_batched, decode=decode_attention_or_batched,
                                                         prefill=prefill))
    for name, prefill in (("reference", paged_attention), ("sdpa", paged_prefill_attention))
}
res = {name: [] for name in sets}
for rnd in range(6):
    for name in sets if rnd % 2 == 0 else list(sets)[::-1]:
        for m in engine.model.modules():
            if hasattr(m, "kernels"):
                m.kernels = sets[name]
        t0 = time.perf_counter()
        start_context(engine, context, 1, 1, rnd)
        res[name].append(time.perf_counter() - t0)
        finish(engine)
for name, ts in res.items():
    print(f"{context}-token prompt, prefill with {name}: {statistics.median(ts):.3f} s (all: {', '.join(f'{t:.2f}' for t in ts)})")
