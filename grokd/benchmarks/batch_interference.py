"""Interactive TTFT while a large batch runs: the batch runner must not starve chat.

Starts ``grokd serve`` (default model, temporary ``--state-dir``) on a free port, measures
streaming chat time-to-first-token at idle, uploads a batch of chat lines through the Files and
Batches API, and measures the same TTFT again while the batch is ``in_progress``. Reports both
distributions and their ratio (target: busy p50 <= 2x idle p50) as JSON and a markdown row.

    python -m grokd.benchmarks.batch_interference --json out.json

Everything goes through openai-python against a real server, so the numbers include HTTP, SSE
and the batch runner's in-flight cap exactly as clients see them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from tqdm import tqdm

from grokd.benchmarks.stats import percentile

if TYPE_CHECKING:  # the openai client is a test/bench extra: `grokd serve` must not need it
    from openai import OpenAI

REPO = Path(__file__).resolve().parents[2]
TARGET_RATIO = 2.0
PROMPTS = ("Say hi.", "Name a colour.", "Count to three.", "Name a fruit.", "Say a greeting.")


@dataclass
class Served:
    """A running ``grokd serve`` child process and where its output goes."""

    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="grokd serve --model (default: the default model)")
    p.add_argument("--n", type=int, default=20, help="interactive requests per phase")
    p.add_argument("--max-tokens", type=int, default=8, help="max_tokens of each interactive request")
    p.add_argument("--gap-s", type=float, default=0.5, help="pause between interactive requests")
    p.add_argument("--batch-lines", type=int, default=1000)
    p.add_argument("--batch-max-tokens", type=int, default=16)
    p.add_argument("--settle-s", type=float, default=2.0, help="wait after in_progress before measuring")
    p.add_argument("--ready-timeout-s", type=float, default=300.0)
    p.add_argument("--serve-arg", action="append", default=[], help="extra grokd serve argument (repeatable)")
    p.add_argument("--json", help="also write the result JSON here")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: argparse.Namespace, state_dir: Path) -> Served:
    """``grokd serve`` on 127.0.0.1:<free port>; returns once /ready answers 200."""
    port = free_port()
    cmd = [sys.executable, "-m", "grokd.server.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--state-dir", str(state_dir), "--log-level", "warning", *args.serve_arg]
    if args.model:
        cmd += ["--model", args.model]
    log_path = state_dir / "serve.log"
    with log_path.open("wb") as log:  # a file, not a pipe: a full pipe would stall the server
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    served = Served(proc, f"http://127.0.0.1:{port}", log_path)
    deadline = time.monotonic() + args.ready_timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"grokd serve exited with {proc.returncode}:\n{served.log_tail()}")
        try:
            if httpx.get(served.url + "/ready", timeout=2).status_code == 200:
                return served
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop_server(served)
    raise TimeoutError(f"grokd serve not ready after {args.ready_timeout_s}s:\n{served.log_tail()}")


def stop_server(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.terminate()
        try:
            served.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait(timeout=30)


def ttft_once(client: OpenAI, model: str, prompt: str, max_tokens: int) -> float:
    """Seconds from sending a streaming chat request to its first content-bearing chunk."""
    start = time.perf_counter()
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                            max_tokens=max_tokens, temperature=0, stream=True)
    first: float | None = None
    for chunk in stream:  # drain the whole stream so requests never overlap
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    if first is None:
        raise RuntimeError(f"no content streamed for {prompt!r}")
    return first


def measure_ttft(client: OpenAI, model: str, n: int, max_tokens: int, gap_s: float, label: str) -> list[float]:
    """``n`` sequential streaming requests (prompts rotated), TTFT of each in seconds."""
    out = []
    for i in tqdm(range(n), desc=f"TTFT {label}", unit="req"):
        out.append(ttft_once(client, model, PROMPTS[i % len(PROMPTS)], max_tokens))
        time.sleep(gap_s)
    return out


def batch_jsonl(model: str, lines: int, max_tokens: int) -> bytes:
    """Chat lines for /v1/chat/completions, each with a distinct short prompt."""
    rows = (
        {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": model, "max_tokens": max_tokens,
                  "messages": [{"role": "user", "content": f"Write a short fact about the number {i}."}]}}
        for i in range(lines)
    )
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


def start_batch(client: OpenAI, model: str, lines: int, max_tokens: int, timeout_s: float = 120.0) -> str:
    """Upload and create the batch; returns its id once it is ``in_progress``."""
    upload = client.files.create(file=("interference.jsonl", batch_jsonl(model, lines, max_tokens)),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + timeout_s
    while batch.status != "in_progress":
        if batch.status in ("failed", "expired", "cancelled", "completed") or time.monotonic() > deadline:
            raise RuntimeError(f"batch {batch.id} is {batch.status} before measuring: {batch.errors}")
        time.sleep(0.2)
        batch = client.batches.retrieve(batch.id)
    return batch.id


def batch_progress(client: OpenAI, batch_id: str) -> dict[str, Any]:
    batch = client.batches.retrieve(batch_id)
    counts = batch.request_counts
    return {"status": batch.status, "completed": counts.completed if counts else None,
            "failed": counts.failed if counts else None, "total": counts.total if counts else None}


def stats_ms(values: list[float]) -> dict[str, float]:
    return {"p50": percentile(values, 50) * 1000, "p90": percentile(values, 90) * 1000,
            "max": max(values) * 1000}


def machine() -> dict[str, Any]:
    return {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "loadavg": list(os.getloadavg())}


def markdown_row(result: dict[str, Any]) -> str:
    idle, busy = result["idle_ttft_ms"], result["busy_ttft_ms"]
    load = ", ".join(f"{x:.2f}" for x in result["machine"]["loadavg"])
    return (f"| batch interference ({result['batch']['lines']}×{result['batch']['max_tokens']} tok) "
            f"| {idle['p50']:.0f} / {idle['p90']:.0f} | {busy['p50']:.0f} / {busy['p90']:.0f} "
            f"| {result['ratio_p50']:.2f}× / {result['ratio_p90']:.2f}× "
            f"| {'yes' if result['meets_target'] else 'NO'} | {load} |")


MARKDOWN_HEADER = ("| run | idle TTFT p50 / p90 (ms) | TTFT during batch p50 / p90 (ms) | ratio p50 / p90 "
                   "| ≤ 2× | load avg (1/5/15) |\n|---|---|---|---|---|---|")


def run(args: argparse.Namespace, state_dir: Path) -> dict[str, Any]:
    host = machine()  # load average before our own server adds to it: how quiet the machine was
    served = start_server(args, state_dir)
    try:
        from openai import OpenAI

        client = OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        model = client.models.list().data[0].id
        measure_ttft(client, model, 3, args.max_tokens, 0.0, "warm-up")
        idle = measure_ttft(client, model, args.n, args.max_tokens, args.gap_s, "idle")
        batch_id = start_batch(client, model, args.batch_lines, args.batch_max_tokens)
        time.sleep(args.settle_s)
        before = batch_progress(client, batch_id)
        started = time.monotonic()
        busy = measure_ttft(client, model, args.n, args.max_tokens, args.gap_s, "during batch")
        elapsed = time.monotonic() - started
        after = batch_progress(client, batch_id)
        client.batches.cancel(batch_id)
        host["loadavg_end"] = list(os.getloadavg())
    finally:
        stop_server(served)
    idle_ms, busy_ms = stats_ms(idle), stats_ms(busy)
    ratio_p50, ratio_p90 = busy_ms["p50"] / idle_ms["p50"], busy_ms["p90"] / idle_ms["p90"]
    return {
        "model": model, "n": args.n, "max_tokens": args.max_tokens, "gap_s": args.gap_s,
        "idle_ttft_ms": idle_ms, "busy_ttft_ms": busy_ms, "ratio_p50": ratio_p50, "ratio_p90": ratio_p90,
        "target_ratio": TARGET_RATIO, "meets_target": ratio_p50 <= TARGET_RATIO,
        "batch": {"lines": args.batch_lines, "max_tokens": args.batch_max_tokens, "before": before,
                  "after": after, "lines_done_while_measuring": (after["completed"] or 0) - (before["completed"] or 0),
                  "in_progress_throughout": after["status"] == "in_progress", "measure_s": elapsed},
        "machine": host, "samples_s": {"idle": idle, "busy": busy},
    }


def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="grokd-interference-") as tmp:
        result = run(args, Path(tmp))
    text = json.dumps(result, indent=2)
    print(text)
    print(MARKDOWN_HEADER)
    print(markdown_row(result))
    if args.json:
        Path(args.json).write_text(text + "\n")
    if not result["batch"]["in_progress_throughout"]:
        print("warning: the batch finished before the busy phase did; use more --batch-lines", file=sys.stderr)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    sys.exit(main(parser.parse_args()))
