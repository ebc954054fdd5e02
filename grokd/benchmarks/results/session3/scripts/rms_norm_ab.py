"""Session 3 A/B (benchmarks/RESULTS.md, "Session 3 CPU"): batch-1 decode step of the default model
with RMSNorm through the numba kernel or the PyTorch reference, five interleaved rounds of 40 steps.

    .venv/bin/python benchmarks/results/session3/scripts/rms_norm_ab.py
"""

import dataclasses
import random
import time

from benchmarks.offline import build_engine
from engine.sampling_params import SamplingParams
from kernels import norm

B, P, ROUNDS = 1, 128, 5
engine, _ = build_engine(None, "bfloat16", B, P, 400)
fast = engine.model.layers[0].self_attn.kernels
plain = dataclasses.replace(fast, rms_norm=norm.rms_norm)
norms = [m for m in engine.model.modules() if type(m).__name__ == "RMSNorm"]


def measure(n: int = 40) -> float:
    rng = random.Random(0)
    params = SamplingParams(temperature=0.0, max_tokens=n + 10, ignore_eos=True)
    engine.add_request(f"p{time.time()}", [rng.randrange(3, engine.vocab_size) for _ in range(P)], params)
    while engine.last_step_tokens != B:
        engine.step()
    for _ in range(3):
        engine.step()
    t0 = time.perf_counter()
    for _ in range(n):
        engine.step()
    dt = (time.perf_counter() - t0) / n
    while engine.has_unfinished():
        engine.step()
    return dt * 1e3


results: dict[str, list[float]] = {"numba norm": [], "torch norm": []}
for _ in range(ROUNDS):
    for name, kernels in (("numba norm", fast), ("torch norm", plain)):
        for m in norms:
            m.kernels = kernels
        results[name].append(measure())
for name, times in results.items():
    times.sort()
    print(f"{name}: median {times[len(times) // 2]:.2f} ms  all {[round(t, 2) for t in times]}")
