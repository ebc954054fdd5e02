"""In-process A/B: decode steps with the whole-stack call vs layer by layer, interleaved (batch B, ctx 128)."""

import statistics
import sys

from benchmarks.context_scaling import start_context, timed_step
from benchmarks.offline import build_engine, model_path
from engine.llm_engine import LLMEngine

batch = int(sys.argv[1]) if len(sys.argv) > 1 else 1
kvd = sys.argv[2] if len(sys.argv) > 2 else "auto"
engine, _ = build_engine(model_path("default"), "bfloat16", batch, 2048 + 80, 0, "auto", kv_cache_dtype=kvd)
stack = engine.model.decoder_stack
assert stack is not None
other = LLMEngine(engine.config, engine.model, engine.tokenizer, checkpoint=engine.checkpoint)
start_context(engine, 128, batch, 300, 1)
start_context(other, 128, batch, 300, 2)
res = {"stack": [], "layers": []}
for s in range(240):
    for name in ("stack", "layers") if s % 2 == 0 else ("layers", "stack"):
        engine.model.decoder_stack = stack if name == "stack" else None
        dt = timed_step(engine if name == "stack" else other, batch)
        if s >= 10:
            res[name].append(dt * 1e3)
a, b = statistics.median(res["stack"]), statistics.median(res["layers"])
print(
    f"batch {batch} kv {kvd}: step p50 stack {a:.3f} ms, layer by layer {b:.3f} ms: {a / b:.3f}x; tok/s {batch * 1e3 / a:.1f} vs {batch * 1e3 / b:.1f}"
)
