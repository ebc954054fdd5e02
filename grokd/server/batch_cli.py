"""``grokd batch INPUT.jsonl OUTPUT.jsonl``: run an OpenAI batch file offline, no HTTP server.

Lines go through the same in-process app as ``grokd serve`` (so each answer is exactly what the
HTTP route would give) and through the same durable job store, keyed by the input's SHA-256:
re-running the same command after an interruption resumes where it stopped and never redoes a
finished line. OUTPUT gets one result line per input line, in input order.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import sys
from pathlib import Path

from grokd.server.jobs.config import BATCH_ENDPOINTS, JobsConfig
from grokd.server.jobs.objects import output_line
from grokd.server.jobs.runner import BatchRunner
from grokd.server.jobs.store import JobStore, write_atomic
from grokd.server.jobs.validation import protocol_body_validator

log = logging.getLogger("grokd.batch")

OFFLINE_WINDOW_S = 10 * 365 * 24 * 3600.0  # offline runs do not expire
PROGRESS_POLL_S = 0.5


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from grokd.server.serve_cli import add_arguments

    p = subparsers.add_parser("batch", help="run an OpenAI-format batch file through the engine offline",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", type=Path, help="batch input JSONL ({custom_id, method, url, body} per line)")
    p.add_argument("output", type=Path, help="where to write the results JSONL")
    p.add_argument("--max-in-flight", type=int, default=16, help="lines inside the engine at once")
    add_arguments(p)  # the model/engine flags of `grokd serve` (--model, --dtype, --state-dir, ...)
    p.set_defaults(func=main)


def input_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def endpoint_of(path: Path) -> str:
    """The batch endpoint: the ``url`` of the first parseable line (validation checks the rest)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            with contextlib.suppress(ValueError, AttributeError):
                url = json.loads(raw).get("url")
                if url in BATCH_ENDPOINTS:
                    return url
    return BATCH_ENDPOINTS[0]


def ensure_batch(store: JobStore, input_path: Path) -> str:
    """The batch for this input (by content hash), created on first run, found on re-runs."""
    batch_id = f"batch_cli_{input_digest(input_path)[:24]}"
    if store.get_batch(batch_id) is None:
        with open(input_path, "rb") as fh:
            file_row = store.add_file(input_path.name, "batch", iter(lambda: fh.read(1 << 20), b""))
        store.create_batch(file_row["id"], endpoint_of(input_path), "offline", OFFLINE_WINDOW_S,
                           {"source": str(input_path)}, batch_id=batch_id)
    return batch_id


def write_output(store: JobStore, batch_id: str, output: Path) -> None:
    lines = (json.dumps(output_line(line)).encode() + b"\n" for line in store.iter_lines(batch_id))
    output.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(output, lines)


async def _progress(store: JobStore, batch_id: str, runner_task: asyncio.Task) -> None:
    from tqdm import tqdm

    bar: tqdm | None = None
    try:
        while not runner_task.done():
            batch = store.get_batch(batch_id)
            if batch and batch["total"]:
                if bar is None:
                    bar = tqdm(total=batch["total"], unit="req", desc="batch", file=sys.stderr)
                counts = store.line_counts(batch_id)
                bar.n = batch["total"] - counts["pending"]
                bar.set_postfix(failed=counts["failed"], refresh=False)
                bar.refresh()
            await asyncio.sleep(PROGRESS_POLL_S)
    finally:
        if bar is not None:
            counts = store.line_counts(batch_id)
            bar.n = bar.total - counts["pending"]
            bar.close()


async def run_batch(runner: BatchRunner, batch_id: str) -> None:
    task = asyncio.create_task(runner.run_until_idle())
    await asyncio.gather(task, _progress(runner.store, batch_id, task))


def main(args: argparse.Namespace) -> int:
    from grokd.engine.async_engine import AsyncEngine
    from grokd.server.app import create_app
    from grokd.server.jobs.asgi_execute import asgi_executor
    from grokd.server.serve_cli import config_from_args
    from grokd.server.state import ServerState

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.input.is_file():
        print(f"grokd batch: no such input file: {args.input}", file=sys.stderr)
        return 2
    config = config_from_args(args)
    state_dir = Path(config.state_dir or args.output.resolve().parent / ".grokd-batch-state")
    store = JobStore(state_dir)
    batch_id = ensure_batch(store, args.input)
    batch = store.get_batch(batch_id)
    assert batch is not None, "ensure_batch created it"
    if batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        engine = AsyncEngine(config.engine_config())
        state = ServerState.build(config, engine, manage_engine=False)
        app = create_app(state, enable_jobs=False)
        jobs_config = JobsConfig(state_dir=state_dir, max_in_flight=args.max_in_flight)
        runner = BatchRunner(store, asgi_executor(app), jobs_config, protocol_body_validator,
                             state.model_exists)
        engine.start()
        try:
            asyncio.run(run_batch(runner, batch_id))
        finally:
            engine.shutdown(config.drain_timeout_s)
        batch = store.get_batch(batch_id)
        assert batch is not None, "batches are never deleted"
    return _report(store, batch, args.output)


def _report(store: JobStore, batch: dict, output: Path) -> int:
    if batch["status"] == "failed":
        errors = json.loads(batch["errors"] or "{}").get("data", [])
        for err in errors[:20]:
            print(f"line {err['line']}: {err['code']}: {err['message']}", file=sys.stderr)
        print(f"grokd batch: input rejected ({len(errors)} errors); nothing was run", file=sys.stderr)
        return 1
    write_output(store, batch["id"], output)
    counts = store.line_counts(batch["id"])
    print(f"grokd batch: {counts['done']} succeeded, {counts['failed']} failed -> {output}", file=sys.stderr)
    return 0 if counts["failed"] == 0 else 3
