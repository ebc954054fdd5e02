"""``grokd bench profile``: where one decode step's time goes. Fills a batch, runs a few decode
steps, then profiles more with torch.profiler (operator self time) and cProfile (Python
functions), so the next optimisation target is a measurement, not a guess.

``--step-times B [B ...]`` instead times plain decode steps (median of ``--steps``, unprofiled) at
each batch size: what one more query row costs, the figure speculative decoding's verification
rows are weighed against (benchmarks/RESULTS.md#speculative-decoding)."""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import random
import statistics
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default", help="checkpoint path, 'default' or 'fixture'")
    p.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="decode steps profiled")
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--threads", type=int)
    p.add_argument("--step-times", type=int, nargs="+", metavar="B",
                   help="only time decode steps at these batch sizes (median ms of --steps each)")


def main(args: argparse.Namespace) -> int:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from grokd.benchmarks.offline import build_engine, model_path
    from grokd.engine.sampling_params import SamplingParams

    if args.threads:
        torch.set_num_threads(args.threads)
    n = args.steps * 3 + 8

    def decoding(batch: int):  # an engine whose ``batch`` requests are all past their prefill
        engine, _ = build_engine(model_path(args.model), args.dtype, batch, args.prompt_len, n)
        rng = random.Random(0)
        params = SamplingParams(temperature=0.0, max_tokens=n, ignore_eos=True)
        for i in range(batch):
            engine.add_request(f"p{i}", [rng.randrange(3, engine.vocab_size) for _ in range(args.prompt_len)], params)
        while engine.last_step_tokens != batch:  # prefill, then first decode
            engine.step()
        for _ in range(3):
            engine.step()
        return engine

    if args.step_times:
        print(f"decode step ms by batch ({args.dtype}, {args.prompt_len} tokens of context, median of "
              f"{args.steps} steps, {torch.get_num_threads()} threads):")
        for batch in args.step_times:
            engine = decoding(batch)
            times = []
            for _ in range(args.steps):
                t0 = time.perf_counter()
                engine.step()
                times.append(time.perf_counter() - t0)
            print(f"  {batch}: {1e3 * statistics.median(times):.2f}", flush=True)
        return 0
    engine = decoding(args.batch)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    plain = (time.perf_counter() - t0) / args.steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            engine.step()
    prof_total = sum(e.self_cpu_time_total for e in prof.key_averages()) / 1e3 / args.steps
    print(f"decode step, batch {args.batch}, {args.dtype}: {plain * 1e3:.2f} ms unprofiled; "
          f"torch ops self time {prof_total:.2f} ms/step (profiled)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))
    cp = cProfile.Profile()
    cp.enable()
    for _ in range(args.steps):
        engine.step()
    cp.disable()
    buf = io.StringIO()
    pstats.Stats(cp, stream=buf).sort_stats("tottime").print_stats(args.top)
    print(buf.getvalue())
    return 0
