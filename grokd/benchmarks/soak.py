"""``grokd bench soak``: hold a server under many concurrent streams for a while and check that
nothing is lost: no errors, no hung requests, every KV block back once the load stops, and resident
memory flat once the pool is warm.

It starts ``grokd serve`` (``--model``, extra ``--serve-arg``s) on a free port, or targets a running
server (``--base-url``). ``--streams`` workers each send streamed completions back to back until
``--duration-s`` is up; a ``--disconnect-fraction`` of the requests is dropped by the client right
after the first content chunk (the server must abort them and free their blocks). A request that
does not finish within ``--hang-timeout-s`` counts as hung. Every ``--sample-every-s`` the server's
``/metrics`` is read: ``process_resident_memory_bytes`` (the RSS curve), KV blocks in use, requests
running and waiting. After the load, the soak waits up to ``--settle-s`` for the blocks in use to
reach 0 and checks ``/ready``.

Results: a JSON file (``--json``: the summary, the RSS curve and the samples) and a text summary
(``--summary``, also printed). Exit status 0 when errors, hung requests and blocks after are all 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from grokd.benchmarks.batch_interference import Served, start_server, stop_server
from grokd.benchmarks.loadgen import Target, send
from grokd.benchmarks.stats import RequestResult, summarize
from grokd.benchmarks.workload import WorkItem, synthetic

WARM_FRACTION = 0.2  # RSS growth is measured from the first sample after this share of the run
RSS_GROWTH_TARGET = 0.05


def add_arguments(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("server")
    t.add_argument("--base-url", help="target a running server (…/v1) instead of starting one")
    t.add_argument("--model", help="grokd serve --model when starting one (default: the default model)")
    t.add_argument("--served-model", help="model id to request (default: the server's first /v1/models entry)")
    t.add_argument("--serve-arg", action="append", default=[], help="extra grokd serve argument (repeatable)")
    t.add_argument("--ready-timeout-s", type=float, default=300.0)
    t.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"))
    w = p.add_argument_group("load")
    w.add_argument("--streams", type=int, default=256, help="concurrent streamed requests")
    w.add_argument("--duration-s", type=float, default=600.0, help="how long new requests are sent")
    w.add_argument("--disconnect-fraction", type=float, default=0.2,
                   help="share of requests the client drops after their first chunk")
    w.add_argument("--input-len", type=int, default=64, help="prompt tokens (random token ids)")
    w.add_argument("--output-len", type=int, default=32, help="max_tokens (ignore_eos: exactly this many)")
    w.add_argument("--hang-timeout-s", type=float, default=300.0, help="a request not done by then is hung")
    w.add_argument("--sample-every-s", type=float, default=5.0, help="how often /metrics is read")
    w.add_argument("--settle-s", type=float, default=60.0, help="wait after the load for blocks to return")
    w.add_argument("--extra-body", default="{}", help="JSON merged into every request body")
    w.add_argument("--seed", type=int, default=0)
    o = p.add_argument_group("output")
    o.add_argument("--json", dest="json_out", help="write the results JSON here")
    o.add_argument("--summary", help="write the text summary here")


@dataclass
class Sample:
    """One read of the server's /metrics, ``t`` seconds after the load started."""

    t: float
    rss_bytes: float
    kv_blocks_used: float
    kv_blocks_total: float
    kv_pool_bytes: float
    running: float
    waiting: float


@dataclass
class Tally:
    """What the workers saw."""

    results: list[RequestResult] = field(default_factory=list)  # finished (or failed) requests read to the end
    dropped_ttft: list[float] = field(default_factory=list)  # first-chunk times of dropped requests
    dropped: int = 0
    hung: int = 0
    errors: list[str] = field(default_factory=list)


def parse_metrics(text: str) -> dict[str, float]:
    """Unlabelled samples of a Prometheus text page, by name."""
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


async def read_metrics(client: httpx.AsyncClient, root: str, t: float) -> Sample:
    g = parse_metrics((await client.get(root + "/metrics", timeout=30)).text)
    return Sample(t, g.get("process_resident_memory_bytes", 0.0), g.get("grokd_kv_blocks_used", 0.0),
                  g.get("grokd_kv_blocks_total", 0.0), g.get("grokd_kv_pool_bytes", 0.0),
                  g.get("grokd_num_requests_running", 0.0), g.get("grokd_num_requests_waiting", 0.0))


async def send_and_drop(client: httpx.AsyncClient, target: Target, item: WorkItem) -> tuple[float | None, str | None]:
    """Stream one request and hang up after its first chunk of output: (TTFT, error)."""
    start = time.perf_counter()
    try:
        async with client.stream("POST", target.url(), json=target.body(item), headers=target.headers()) as r:
            if r.status_code != 200:
                return None, f"HTTP {r.status_code}: {(await r.aread()).decode(errors='replace')[:200]}"
            async for line in r.aiter_lines():
                if line.startswith("data:") and line[5:].strip() != "[DONE]":
                    chunk = json.loads(line[5:])
                    if chunk.get("error"):
                        return None, str(chunk["error"])[:200]
                    if chunk.get("choices"):
                        return time.perf_counter() - start, None  # leaving the block closes the connection
        return None, "stream ended before any output"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"[:200]


async def worker(client: httpx.AsyncClient, target: Target, args: argparse.Namespace, index: int,
                 deadline: float, tally: Tally) -> None:
    """Send requests back to back until ``deadline``; each one is dropped with the configured chance."""
    rng = random.Random(args.seed * 100_003 + index)
    n = 0
    while time.monotonic() < deadline:
        item = synthetic(1, args.input_len, args.output_len, seed=rng.randrange(1 << 30))[0]
        n += 1
        try:
            if rng.random() < args.disconnect_fraction:
                ttft, error = await asyncio.wait_for(send_and_drop(client, target, item), args.hang_timeout_s)
                tally.dropped += 1
                if ttft is not None:
                    tally.dropped_ttft.append(ttft)
                if error:
                    tally.errors.append(error)
            else:
                res = await asyncio.wait_for(send(client, target, item), args.hang_timeout_s)
                tally.results.append(res)
                if res.error:
                    tally.errors.append(res.error)
        except TimeoutError:
            tally.hung += 1


async def sampler(client: httpx.AsyncClient, root: str, every: float, t0: float, stop: asyncio.Event,
                  samples: list[Sample]) -> None:
    while not stop.is_set():
        try:
            samples.append(await read_metrics(client, root, time.monotonic() - t0))
        except httpx.HTTPError:
            pass
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass


async def model_id(client: httpx.AsyncClient, base_url: str, headers: dict[str, str]) -> str:
    r = await client.get(base_url.rstrip("/") + "/models", headers=headers, timeout=30)
    r.raise_for_status()
    return str(r.json()["data"][0]["id"])


def rss_growth(samples: list[Sample], duration_s: float) -> dict[str, float]:
    """RSS at the first sample after the warm-up share of the run, the most after it, and the growth."""
    warm = [s for s in samples if s.t >= duration_s * WARM_FRACTION and s.rss_bytes > 0]
    if not warm:
        return {}
    base = warm[0].rss_bytes
    peak = max(s.rss_bytes for s in warm)
    return {"warm_t_s": warm[0].t, "warm_rss_bytes": base, "peak_rss_bytes": peak,
            "last_rss_bytes": warm[-1].rss_bytes, "growth_after_warm": peak / base - 1}


async def soak(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    """Run the load against ``base_url`` (…/v1) and return the results."""
    root = base_url.rstrip("/").removesuffix("/v1")
    limits = httpx.Limits(max_connections=args.streams + 8, max_keepalive_connections=args.streams + 8)
    async with httpx.AsyncClient(timeout=httpx.Timeout(args.hang_timeout_s + 30, connect=30.0),
                                 limits=limits) as client:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        target = Target(base_url, args.served_model or await model_id(client, base_url, headers),
                        api_key=args.api_key, extra_body=json.loads(args.extra_body))
        samples: list[Sample] = [await read_metrics(client, root, 0.0)]
        tally = Tally()
        stop = asyncio.Event()
        t0 = time.monotonic()
        sampling = asyncio.create_task(sampler(client, root, args.sample_every_s, t0, stop, samples))
        await asyncio.gather(*(worker(client, target, args, i, t0 + args.duration_s, tally)
                               for i in range(args.streams)))
        load_s = time.monotonic() - t0
        settle_until = time.monotonic() + args.settle_s
        after = await read_metrics(client, root, time.monotonic() - t0)
        while (after.kv_blocks_used or after.running or after.waiting) and time.monotonic() < settle_until:
            await asyncio.sleep(0.5)
            after = await read_metrics(client, root, time.monotonic() - t0)
        stop.set()
        await sampling
        samples.append(after)
        ready = (await client.get(root + "/ready", timeout=30)).status_code
    ok = [r for r in tally.results if r.ok]
    itls = [x for r in ok for x in r.itls]
    ttfts = [r.ttft for r in ok if r.ttft is not None] + tally.dropped_ttft
    summary = {
        "requests": len(tally.results) + tally.dropped + tally.hung,
        "completed": len(ok),
        "dropped": tally.dropped,
        "errors": len(tally.errors),
        "error_examples": sorted(set(tally.errors))[:5],
        "hung": tally.hung,
        "kv_blocks_after": after.kv_blocks_used,
        "kv_blocks_total": after.kv_blocks_total,
        "kv_pool_bytes": after.kv_pool_bytes,
        "ready_after": ready,
        "load_s": load_s,
        "output_tokens": sum(r.output_tokens for r in ok),
        "ttft_ms": summarize(ttfts, 1e3),
        "itl_ms": summarize(itls, 1e3),
        "rss": rss_growth(samples, args.duration_s),
    }
    return {"summary": summary, "samples": [asdict(s) for s in samples]}


def passed(summary: dict[str, Any]) -> bool:
    return summary["errors"] == 0 and summary["hung"] == 0 and summary["kv_blocks_after"] == 0 \
        and summary["ready_after"] == 200


def text_summary(meta: dict[str, Any], s: dict[str, Any], samples: list[dict[str, Any]]) -> str:
    mib = 2**20
    rss = s["rss"]
    curve = " ".join(f"{x['t']:.0f}s:{x['rss_bytes'] / mib:.0f}" for x in samples)
    lines = [
        f"soak: {meta['streams']} streams, {meta['disconnect_fraction']:.0%} dropped after the first chunk, "
        f"{meta['duration_s']:.0f} s, {meta['input_len']} in / {meta['output_len']} out tokens ({meta['started_utc']})",
        f"requests {s['requests']}: completed {s['completed']}, dropped {s['dropped']}, errors {s['errors']}, "
        f"hung {s['hung']}",
        f"KV blocks in use after: {s['kv_blocks_after']:.0f} of {s['kv_blocks_total']:.0f} "
        f"(pool {s['kv_pool_bytes'] / mib:.0f} MiB); /ready after: {s['ready_after']}",
        f"TTFT p50/p99 {s['ttft_ms']['p50']:.0f}/{s['ttft_ms']['p99']:.0f} ms | "
        f"ITL p50/p99 {s['itl_ms']['p50']:.1f}/{s['itl_ms']['p99']:.1f} ms | {s['output_tokens']} tokens out",
    ]
    if rss:
        lines.append(f"RSS after warm-up ({rss['warm_t_s']:.0f} s): {rss['warm_rss_bytes'] / mib:.0f} MiB, "
                     f"peak {rss['peak_rss_bytes'] / mib:.0f} MiB, last {rss['last_rss_bytes'] / mib:.0f} MiB, "
                     f"growth {rss['growth_after_warm']:+.1%} (target < {RSS_GROWTH_TARGET:.0%})")
    lines.append(f"RSS curve (MiB): {curve}")
    for e in s["error_examples"]:
        lines.append(f"error: {e}")
    lines.append("PASS" if passed(s) else "FAIL")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> int:
    if not 0 <= args.disconnect_fraction <= 1:
        raise SystemExit(f"--disconnect-fraction: expected 0..1, got {args.disconnect_fraction}")
    if args.streams < 1 or args.duration_s <= 0:
        raise SystemExit("--streams must be >= 1 and --duration-s > 0")
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    served: Served | None = None
    with tempfile.TemporaryDirectory(prefix="grokd-soak-") as state_dir:
        try:
            if args.base_url:
                base_url = args.base_url
            else:
                served = start_server(args, Path(state_dir))
                base_url = served.url + "/v1"
            data = asyncio.run(soak(args, base_url))
        finally:
            if served is not None:
                stop_server(served)
    meta = {"started_utc": started, "base_url": base_url, "streams": args.streams, "duration_s": args.duration_s,
            "disconnect_fraction": args.disconnect_fraction, "input_len": args.input_len,
            "output_len": args.output_len, "hang_timeout_s": args.hang_timeout_s, "serve_args": args.serve_arg,
            "model": args.model, "host": platform.node(), "loadavg_end": list(os.getloadavg())}
    text = text_summary(meta, data["summary"], data["samples"])
    print(text, end="", flush=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"meta": meta, **data}, indent=2) + "\n")
    if args.summary:
        Path(args.summary).write_text(text)
    return 0 if passed(data["summary"]) else 1
