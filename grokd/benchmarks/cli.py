"""``grokd bench``: serve (load generator), offline (engine vs HF transformers), roofline
(machine limits and utilisation), profile (one decode step), context (TPOT vs context length), soak (a long run under
many streams: nothing lost, memory flat), plot (overlay result files). Heavy imports happen only
inside the chosen subcommand so ``grokd --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path
from typing import Any

_COMMANDS = {
    "serve": ("grokd.benchmarks.serve_bench", "load-test an OpenAI-compatible server (grokd or a peer)"),
    "offline": ("grokd.benchmarks.offline", "in-process engine throughput vs HF transformers generate"),
    "roofline": ("grokd.benchmarks.roofline", "memory bandwidth, matmul peak, decode MBU, prefill MFU"),
    "profile": ("grokd.benchmarks.profile_step", "torch.profiler + cProfile of grokd decode steps"),
    "interference": ("grokd.benchmarks.batch_interference", "interactive TTFT at idle vs while a large batch runs"),
    "context": ("grokd.benchmarks.context_scaling", "decode TPOT vs context length, KV-cache bytes per token"),
    "soak": ("grokd.benchmarks.soak", "many streams for a while, some dropped: errors, hung, blocks after, RSS"),
    "spec": ("grokd.benchmarks.speculative", "speculative decoding vs plain: grounded and free text, 1 and 8 streams"),
    "spec-http": ("grokd.benchmarks.spec_http", "the spec workloads over HTTP against any server (peers' prompt lookup)"),
}


def add_cli(subparsers: Any) -> None:
    bench = subparsers.add_parser("bench", help="benchmarks: serve, offline, roofline, profile, interference, context, soak, spec, spec-http, plot",
                                  description=__doc__)
    sub = bench.add_subparsers(dest="bench_command", required=True)
    for name, (module, helptext) in _COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        mod = importlib.import_module(module)
        mod.add_arguments(p)
        p.set_defaults(func=mod.main)
    p = sub.add_parser("plot", help="overlay several `bench serve --json` files in one PNG")
    p.add_argument("files", nargs="+", help="result JSON files (label from each file's meta)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_plot)


def _plot(args: argparse.Namespace) -> int:
    from grokd.benchmarks.plot import plot

    runs = []
    for f in args.files:
        data = json.loads(Path(f).read_text())
        runs.append((data["meta"].get("label") or Path(f).stem, data))
    print(plot(runs, args.out))
    return 0
