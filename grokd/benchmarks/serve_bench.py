"""``grokd bench serve``: sweep load levels against an OpenAI-compatible server and report
TTFT/TPOT/ITL/E2E percentiles, throughput and goodput; optional JSON results and PNG plot."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from grokd.benchmarks.loadgen import Target, run_closed_loop, run_poisson
from grokd.benchmarks.stats import SLO, aggregate
from grokd.benchmarks.workload import WorkItem, sharegpt, synthetic


def add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("target")
    t.add_argument("--base-url", default="http://127.0.0.1:8000/v1", help="OpenAI base URL (…/v1)")
    t.add_argument("--model", required=True, help="model id the server answers to")
    t.add_argument("--endpoint", choices=["completions", "chat"], default="completions")
    t.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    t.add_argument("--no-ignore-eos", dest="ignore_eos", action="store_false",
                   help="let requests stop at EOS (default: exactly max_tokens each)")
    t.add_argument("--extra-body", default="{}", help="JSON merged into every request body")
    w = p.add_argument_group("workload")
    w.add_argument("--dataset", help="ShareGPT-format JSON file (default: synthetic prompts)")
    w.add_argument("--input-len", type=int, default=128)
    w.add_argument("--output-len", type=int, default=128)
    w.add_argument("--input-range", type=float, default=0.0, help="uniform spread ±ratio of --input-len")
    w.add_argument("--output-range", type=float, default=0.0, help="uniform spread ±ratio of --output-len")
    w.add_argument("--text-prompts", action="store_true", help="synthetic word prompts instead of token ids")
    w.add_argument("--vocab-range", type=int, nargs=2, default=(100, 1000), metavar=("LO", "HI"),
                   help="token ids drawn from [LO, HI) for synthetic prompts")
    w.add_argument("--num-prompts", type=int, nargs="+",
                   help="requests per load level, one value or one per level (default max(8, 4×concurrency) or 64)")
    w.add_argument("--seed", type=int, default=0)
    load = p.add_argument_group("load (one or more levels)")
    mode = load.add_mutually_exclusive_group()
    mode.add_argument("--concurrency", type=int, nargs="+", help="closed-loop in-flight requests")
    mode.add_argument("--request-rate", type=float, nargs="+", help="Poisson arrivals per second (inf ok)")
    load.add_argument("--max-concurrency", type=int, help="cap on in-flight requests with --request-rate")
    load.add_argument("--warmup", type=int, default=2, help="unmeasured requests before the first level")
    s = p.add_argument_group("SLO for goodput (ms)")
    s.add_argument("--slo-ttft", type=float)
    s.add_argument("--slo-tpot", type=float)
    s.add_argument("--slo-e2e", type=float)
    o = p.add_argument_group("output")
    o.add_argument("--label", help="name of this run in tables and plots (default: the model)")
    o.add_argument("--json", dest="json_out", help="write results JSON here")
    o.add_argument("--plot", help="write a latency-vs-load PNG here")
    o.add_argument("--no-progress", dest="progress", action="store_false")


def _items(args: argparse.Namespace, n: int, seed: int) -> list[WorkItem]:
    if args.dataset:
        return sharegpt(args.dataset, n, args.output_len if args.ignore_eos else None, seed=seed)
    return synthetic(n, args.input_len, args.output_len, input_range=args.input_range,
                     output_range=args.output_range, token_ids=not args.text_prompts,
                     vocab=tuple(args.vocab_range), seed=seed)


def _levels(args: argparse.Namespace) -> list[tuple[str, float]]:
    if args.request_rate:
        return [("request_rate", r) for r in args.request_rate]
    return [("concurrency", c) for c in (args.concurrency or [1])]


async def _run(args: argparse.Namespace, target: Target) -> list[dict[str, Any]]:
    slo = SLO(args.slo_ttft, args.slo_tpot, args.slo_e2e)
    if args.warmup:
        warm = _items(args, args.warmup, seed=args.seed + 10_000)
        for it in warm:
            it.max_tokens = min(it.max_tokens, 8)
        await run_closed_loop(target, warm, args.warmup, progress=False)
    levels = []
    levels_in = _levels(args)
    counts = args.num_prompts or []
    if len(counts) not in (0, 1, len(levels_in)):
        raise SystemExit("--num-prompts: give one value or one per load level")
    for i, (mode, load) in enumerate(levels_in):
        given = counts[i] if len(counts) == len(levels_in) else (counts[0] if counts else None)
        if mode == "concurrency":
            n = given or max(8, 4 * int(load))
            results, dur = await run_closed_loop(target, _items(args, n, args.seed + i), int(load), args.progress)
        else:
            n = given or 64
            results, dur = await run_poisson(target, _items(args, n, args.seed + i), load,
                                             args.max_concurrency, args.seed + i, args.progress)
        summary = aggregate(results, dur, slo)
        levels.append({"mode": mode, "load": load, "num_prompts": n, "summary": summary})
        _print_level(mode, load, summary)
    return levels


def _print_level(mode: str, load: float, s: dict[str, Any]) -> None:
    fail = f" FAILED={s['failed']} {s.get('errors', '')}" if s["failed"] else ""
    good = f" goodput={s['goodput']:.2f} req/s" if "goodput" in s else ""
    print(f"{mode}={load:g}: {s['completed']} ok in {s['duration_s']:.1f}s | "
          f"out {s['output_throughput']:.1f} tok/s, {s['request_throughput']:.2f} req/s{good} | "
          f"TTFT p50/p90/p99 {s['ttft_ms']['p50']:.0f}/{s['ttft_ms']['p90']:.0f}/{s['ttft_ms']['p99']:.0f} ms | "
          f"TPOT p50/p99 {s['tpot_ms']['p50']:.1f}/{s['tpot_ms']['p99']:.1f} ms | "
          f"ITL p50/p99 {s['itl_ms']['p50']:.1f}/{s['itl_ms']['p99']:.1f} ms | "
          f"E2E p50/p99 {s['e2e_ms']['p50']:.0f}/{s['e2e_ms']['p99']:.0f} ms{fail}", flush=True)


def main(args: argparse.Namespace) -> int:
    target = Target(args.base_url, args.model, args.endpoint, args.api_key, args.ignore_eos,
                    json.loads(args.extra_body))
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    levels = asyncio.run(_run(args, target))
    data = {
        "meta": {
            "label": args.label or args.model,
            "base_url": args.base_url,
            "model": args.model,
            "endpoint": args.endpoint,
            "dataset": args.dataset or ("synthetic-text" if args.text_prompts else "synthetic-token-ids"),
            "input_len": args.input_len,
            "output_len": args.output_len,
            "ignore_eos": args.ignore_eos,
            "started_utc": started,
            "host": platform.node(),
            "loadavg": list(os.getloadavg()),
        },
        "levels": levels,
    }
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(data, indent=2) + "\n")
    if args.plot:
        from grokd.benchmarks.plot import plot

        plot([(data["meta"]["label"], data)], args.plot)
    return 0 if all(lv["summary"]["failed"] == 0 for lv in levels) else 1
