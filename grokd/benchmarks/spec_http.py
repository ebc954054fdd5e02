"""The speculative-decoding workloads of ``grokd bench spec`` over HTTP, against any OpenAI-compatible
server: grokd, or a peer started with or without its own prompt-lookup speculation.

    grokd bench spec-http --base-url http://127.0.0.1:8021/v1 --model smollm2 --label vllm-ngram
    grokd bench spec-http --base-url http://127.0.0.1:8041/v1 http://127.0.0.1:8042/v1 \
        --label plain ngram --model smollm2-135m-instruct

``grokd bench spec`` runs both engines in one process; a peer's speculation is a server setting.
With one ``--base-url`` this measures that server, and a comparison is between runs (start the
server plain, run this, restart it with speculation, run this again). With several (each serving
``--model``: e.g. the same grokd plain and speculative on two ports) every round visits them in
turn, the order reversed each round, so drift of the machine falls on all alike, as in ``grokd
bench spec``; the ratio to the first is printed. Each case (workload × streams) sends the same
greedy chats (``temperature`` 0, ``max_tokens``), ``streams`` at once, ``--rounds`` times;
reported: completion tokens per second of wall time (median over rounds), with the output texts'
hash so that runs with and without speculation can be checked for identical greedy output.
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


async def _batch(client: httpx.AsyncClient, url: str, args: argparse.Namespace, batch: list[str],
                 max_tokens: int) -> tuple[float, list[str], int]:
    t0 = time.perf_counter()
    results = await asyncio.gather(*(_chat(client, url, args.model, t, max_tokens) for t in batch))
    return time.perf_counter() - t0, [r[0] for r in results], sum(r[1] for r in results)


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    servers = list(zip(args.label, args.base_url, strict=True))
    rows = []
    async with httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=30.0)) as client:
        for _, url in servers:
            await _batch(client, url, args, texts("free", 1), 8)  # warm-up
        for workload in args.workloads:
            for n in args.streams:
                batch = texts(workload, n)
                load_start = os.getloadavg()[0]
                seconds: dict[str, list[float]] = {label: [] for label, _ in servers}
                outputs: dict[str, list[str]] = {}
                tokens: dict[str, int] = {}
                for r in range(args.rounds):
                    for label, url in (servers if r % 2 == 0 else servers[::-1]):
                        elapsed, outputs[label], tokens[label] = await _batch(client, url, args, batch, args.max_tokens)
                        seconds[label].append(elapsed)
                load = [round(load_start, 2), round(os.getloadavg()[0], 2)]
                for label, _ in servers:
                    rows.append({"label": label, "workload": workload, "streams": n,
                                 "completion_tokens": tokens[label],
                                 "tok_s": round(tokens[label] / statistics.median(seconds[label]), 1),
                                 "seconds": [round(x, 3) for x in seconds[label]],
                                 "output_sha256": hashlib.sha256(json.dumps(outputs[label]).encode()).hexdigest()[:16],
                                 "loadavg_1min": load})
                    print(json.dumps(rows[-1]), flush=True)
    meta = {"labels": args.label, "base_urls": args.base_url, "model": args.model, "cpu": cpu_tier.cpu_model(),
            "max_tokens": args.max_tokens, "rounds": args.rounds,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return {"meta": meta, "rows": rows}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--base-url", required=True, nargs="+",
                   help="the server's OpenAI base URL, e.g. http://127.0.0.1:8000/v1; several: rounds alternate")
    p.add_argument("--model", required=True, help="the model id the servers serve")
    p.add_argument("--label", nargs="+", help="a name per server in the output (e.g. llama.cpp-lookup); "
                   "default: the URLs")
    p.add_argument("--streams", type=int, nargs="+", default=[1, 8])
    p.add_argument("--workloads", nargs="+", default=["grounded", "free"], choices=["grounded", "free"])
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", dest="json_out", help="write results JSON here")


def main(args: argparse.Namespace) -> int:
    args.base_url = [url.rstrip("/") for url in args.base_url]
    args.label = args.label or args.base_url
    if len(args.label) != len(args.base_url):
        raise SystemExit(f"grokd bench spec-http: {len(args.label)} labels for {len(args.base_url)} servers")
    result = asyncio.run(measure(args))
    first = {(r["workload"], r["streams"]): r["tok_s"] for r in result["rows"] if r["label"] == args.label[0]}
    print(f"| run | workload | streams | tok/s | vs {args.label[0]} | completion tokens | output hash | load |")
    print("|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        ratio = r["tok_s"] / first[(r["workload"], r["streams"])]
        print(f"| {r['label']} | {r['workload']} | {r['streams']} | {r['tok_s']} | {ratio:.2f}× | "
              f"{r['completion_tokens']} | `{r['output_sha256']}` | {r['loadavg_1min'][0]}–{r['loadavg_1min'][1]} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    raise SystemExit(main(parser.parse_args()))
