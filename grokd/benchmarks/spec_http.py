"""The speculative-decoding workloads of ``grokd bench spec`` over HTTP, against any OpenAI-compatible
server: grokd, or a peer started with or without its own prompt-lookup speculation.

    grokd bench spec-http --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-ngram

``grokd bench spec`` runs both engines in one process; a peer's speculation is a server setting,
so this measures one server at a time and the comparison is between runs: start the server plain,
run this, restart it with speculation, run this again, then compare the ``--json`` files. Each case
(workload × streams) sends the same greedy chats (``temperature`` 0, ``max_tokens``), ``streams`` at
once, ``--rounds`` times; reported: completion tokens per second of wall time (median over
rounds), with the output texts' hash so that runs with and without speculation can be checked for
identical greedy output.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from grokd.benchmarks.speculative import texts
from grokd.kernels import cpu_tier


async def _chat(client: httpx.AsyncClient, url: str, model: str, text: str, max_tokens: int) -> tuple[str, int]:
    r = await client.post(url + "/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": text}], "temperature": 0, "max_tokens": max_tokens})
    r.raise_for_status()
    body = r.json()
    return body["choices"][0]["message"]["content"] or "", int(body["usage"]["completion_tokens"])


async def _batch(client: httpx.AsyncClient, args: argparse.Namespace, batch: list[str]) -> tuple[float, list[str], int]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_chat(client, args.base_url, args.model, t, args.max_tokens) for t in batch))
    return time.perf_counter() - t0, [r[0] for r in results], sum(r[1] for r in results)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=30.0)) as client:
        await _batch(client, argparse.Namespace(**{**vars(args), "max_tokens": 8}), texts("free", 1))  # warm-up
        for workload in args.workloads:
            for n in args.streams:
                batch = texts(workload, n)
                load_start = os.getloadavg()[0]
                seconds, outputs, tokens = [], [], 0
                for _ in range(args.rounds):
                    elapsed, outputs, tokens = await _batch(client, args, batch)
                    seconds.append(elapsed)
                rows.append({"workload": workload, "streams": n, "completion_tokens": tokens,
                             "tok_s": round(tokens / statistics.median(seconds), 1),
                             "seconds": [round(s, 3) for s in seconds],
                             "output_sha256": hashlib.sha256(json.dumps(outputs).encode()).hexdigest()[:16],
                             "loadavg_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)]})
                print(json.dumps(rows[-1]), flush=True)
    meta = {"label": args.label, "base_url": args.base_url, "model": args.model, "cpu": cpu_tier.cpu_model(),
            "max_tokens": args.max_tokens, "rounds": args.rounds,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"meta": meta, "rows": rows}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", required=True, help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", required=True, help="the model id the server serves")
    p.add_argument("--label", default="", help="a name for this run in the output (e.g. llama.cpp-lookup)")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    p.add_argument("--workloads", nargs="+", default=["grounded", "free"], choices=["grounded", "free"])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", dest="json_out", help="write results JSON here")


def main(args: argparse.Namespace) -> int:
    args.base_url = args.base_url.rstrip("/")
    result = asyncio.run(measure(args))
    print("| run | workload | streams | tok/s | completion tokens | output hash | load |\n|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        print(f"| {args.label} | {r['workload']} | {r['streams']} | {r['tok_s']} | {r['completion_tokens']} | "
              f"`{r['output_sha256']}` | {r['loadavg_1min'][0]}–{r['loadavg_1min'][1]} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
