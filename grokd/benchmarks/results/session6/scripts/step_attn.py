"""Per decode step at batch 1: total step time vs time inside decode attention (timed library), 128 vs 2048."""

import ctypes
import os
import statistics
import sys
from pathlib import Path

from benchmarks.context_scaling import finish, start_context, timed_step
from benchmarks.offline import build_engine, model_path
from engine.llm_engine import LLMEngine
from kernels import cpu_build

# the timed copy of the sources (mk_timed2.sh), built into its own cache before the engine loads it
cpu_build.SOURCE_DIR = Path(os.environ.get("TIMED_SRC", "/tmp/ab/csrc_t"))
os.environ.setdefault("GROKD_CACHE_DIR", "/tmp/ab/cache_timed")

kvd = sys.argv[1] if len(sys.argv) > 1 else "int8"
ctxs = [128, 2048]
engine, _ = build_engine(model_path("default"), "bfloat16", 1, 2048 + 80, 0, "auto", kv_cache_dtype=kvd)
lib = cpu_build.library().lib
fn = "grokd_decode_attention_bf16_i8_phases" if kvd == "int8" else "grokd_decode_attention_bf16_phases"
getattr(lib, fn).restype = ctypes.POINTER(ctypes.c_double)
ph = getattr(lib, fn)()
engines = {
    c: engine
    if i == 0
    else LLMEngine(engine.config, engine.model, engine.tokenizer, checkpoint=engine.checkpoint)
    for i, c in enumerate(ctxs)
}
res = {c: {"step": [], "attn": [], "ph": [[] for _ in range(4)]} for c in ctxs}
for rnd in range(3):
    for c, e in engines.items():
        start_context(e, c, 1, 60, rnd * 10 + c)
    for s in range(50):
        for c in ctxs if s % 2 == 0 else ctxs[::-1]:
            before = [ph[i] for i in range(4)]
            dt = timed_step(engines[c], 1)
            d = [ph[i] - before[i] for i in range(4)]
            if s >= 5:
                res[c]["step"].append(dt * 1e3)
                res[c]["attn"].append(sum(d) * 1e3)
                for i in range(4):
                    res[c]["ph"][i].append(d[i] * 1e3)
    for e in engines.values():
        finish(e)
for c in ctxs:
    r = res[c]
    print(
        f"{kvd} ctx {c}: step p50 {statistics.median(r['step']):.3f} ms, attention (30 layers) {statistics.median(r['attn']):.3f} ms, phases "
        + " ".join(f"{statistics.median(x):.3f}" for x in r["ph"])
        + f", rest {statistics.median(r['step']) - statistics.median(r['attn']):.3f}"
    )
