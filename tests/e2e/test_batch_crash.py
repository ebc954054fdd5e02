"""Kill -9 in the middle of a batch, restart on the same --state-dir, lose nothing.

Starts ``grokd serve`` as a subprocess (float32 SmolLM2), submits a 200-line batch, SIGKILLs the
process once part of it is committed, restarts it on the same state directory and checks that
every custom_id appears exactly once, that lines finished before the kill were not run again,
and that every answer equals the same request sent directly (temperature 0).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

REPO = Path(__file__).resolve().parents[2]
N_LINES = 200
PROMPTS = [f"The number {i} is" for i in range(20)]
MAX_TOKENS = 3

# `grokd serve` exactly (server.serve_cli), without importing the other subcommands' modules.
SERVE = (
    "import argparse, sys\n"
    "from grokd.server import serve_cli\n"
    "parser = argparse.ArgumentParser(prog='grokd')\n"
    "serve_cli.add_cli(parser.add_subparsers(dest='command', required=True))\n"
    "args = parser.parse_args(sys.argv[1:])\n"
    "sys.exit(args.func(args))\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(state_dir: Path, port: int, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-c", SERVE, "serve", "--state-dir", str(state_dir), "--port", str(port),
           "--dtype", "float32", "--max-model-len", "512"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 180
    while True:
        assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "server did not become ready"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)


def _line_states(state_dir: Path, batch_id: str) -> dict[str, tuple[str, str | None]]:
    conn = sqlite3.connect(state_dir / "jobs.sqlite3")
    try:
        rows = conn.execute("SELECT custom_id, status, result FROM batch_lines WHERE batch_id = ?", (batch_id,))
        return {cid: (status, result) for cid, status, result in rows}
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_mid_batch_then_restart_loses_nothing(tmp_path):
    state_dir, log = tmp_path / "state", tmp_path / "server.log"
    port = _free_port()
    proc = _start(state_dir, port, log)
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=60)
    try:
        model = client.models.list().data[0].id
        lines = [{"custom_id": f"item-{i:03d}", "method": "POST", "url": "/v1/completions",
                  "body": {"model": model, "temperature": 0, "max_tokens": MAX_TOKENS,
                           "prompt": PROMPTS[i % len(PROMPTS)]}}
                 for i in range(N_LINES)]
        path = tmp_path / "in.jsonl"
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        file_id = client.files.create(file=path.open("rb"), purpose="batch").id
        batch_id = client.batches.create(input_file_id=file_id, endpoint="/v1/completions",
                                         completion_window="24h").id
        deadline = time.monotonic() + 120
        while client.batches.retrieve(batch_id).request_counts.completed < 20:
            assert time.monotonic() < deadline, "batch made no progress"
            time.sleep(0.1)
        deferred = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=30, json={
            "model": model, "deferred": True, "temperature": 0, "max_tokens": MAX_TOKENS,
            "messages": [{"role": "user", "content": PROMPTS[0]}]})
        assert deferred.status_code == 200, deferred.text
        deferred_id = deferred.json()["request_id"]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    before = _line_states(state_dir, batch_id)
    finished_before = {cid: result for cid, (status, result) in before.items() if status == "done"}
    assert 20 <= len(finished_before) < N_LINES, "the kill must land mid-batch"

    proc = _start(state_dir, port, log)
    try:
        deadline = time.monotonic() + 240
        while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "expired"):
            assert time.monotonic() < deadline, f"resumed batch stuck: {batch.request_counts}"
            time.sleep(0.3)
        assert batch.status == "completed", batch.errors
        assert (batch.request_counts.completed, batch.request_counts.failed) == (N_LINES, 0)
        assert batch.error_file_id is None
        results = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        assert sorted(r["custom_id"] for r in results) == [x["custom_id"] for x in lines]  # each exactly once

        after = _line_states(state_dir, batch_id)
        for cid, result in finished_before.items():
            assert after[cid] == ("done", result), f"{cid} was redone after the restart"

        expected = {}
        for prompt in PROMPTS:
            r = client.completions.create(model=model, prompt=prompt, temperature=0, max_tokens=MAX_TOKENS)
            expected[prompt] = r.choices[0].text
        chat = client.chat.completions.create(model=model, messages=[{"role": "user", "content": PROMPTS[0]}],
                                              temperature=0, max_tokens=MAX_TOKENS)
        url = f"http://127.0.0.1:{port}/v1/chat/deferred-completion/{deferred_id}"
        while (resp := httpx.get(url)).status_code == 202:  # pending at the kill: re-run after restart
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"] == chat.choices[0].message.content
        by_id = {x["custom_id"]: x["body"]["prompt"] for x in lines}
        for r in results:
            assert r["response"]["status_code"] == 200
            assert r["response"]["body"]["choices"][0]["text"] == expected[by_id[r["custom_id"]]]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
