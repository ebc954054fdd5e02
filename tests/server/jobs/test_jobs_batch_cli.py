"""``grokd batch``: offline run through the real engine (grok1-tiny), resumable by re-running."""

from __future__ import annotations

import asyncio
import json

from grokd.server.batch_cli import ensure_batch
from grokd.server.cli import main as grokd
from grokd.server.jobs.config import JobsConfig
from grokd.server.jobs.runner import BatchRunner
from grokd.server.jobs.store import JobStore

from .jobs_helpers import FakeExecutor

PROMPTS = [[1, 2, 3], [5, 6], [7, 8, 9, 10], [11], [12, 13]]


def _write_input(path, model: str) -> list[dict]:
    lines = [{"custom_id": f"row-{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": model, "prompt": p, "max_tokens": 3, "temperature": 0}}
             for i, p in enumerate(PROMPTS)]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return lines


def _args(grok1_tiny_dir, inp, out, state):
    return ["batch", str(inp), str(out), "--model", str(grok1_tiny_dir), "--dtype", "float32",
            "--state-dir", str(state), "--served-model-name", "tiny"]


def test_offline_batch_resumes_without_redoing_lines(grok1_tiny_dir, tmp_path):
    inp, out, state = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "state"
    lines = _write_input(inp, "tiny")

    # A first run that dies after two lines: those two are committed with a marker answer.
    store = JobStore(state)
    batch_id = ensure_batch(store, inp)
    ex = FakeExecutor()
    ex.gate = asyncio.Event()

    class TwoThenHang(FakeExecutor):
        async def __call__(self, url, body, priority):
            if sum(self.calls.values()) >= 2:
                self.gate = ex.gate  # hang like a process about to be killed
            return await super().__call__(url, body, priority)

    partial = TwoThenHang()
    runner = BatchRunner(store, partial, JobsConfig(state_dir=state, max_in_flight=1))

    async def interrupted() -> None:
        runner.start()
        while store.line_counts(batch_id)["done"] < 2:
            await asyncio.sleep(0.01)
        await runner.stop()

    asyncio.run(interrupted())
    marked = {r["custom_id"]: r["result"] for r in store.iter_lines(batch_id) if r["status"] == "done"}
    assert len(marked) == 2
    store.close()

    assert grokd(_args(grok1_tiny_dir, inp, out, state)) == 0
    results = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [x["custom_id"] for x in lines]
    for r in results:
        assert r["response"]["status_code"] == 200 and r["error"] is None
        if r["custom_id"] in marked:  # finished before the interruption: kept, not redone
            assert r["response"] == json.loads(marked[r["custom_id"]])
        else:
            body = r["response"]["body"]
            assert body["object"] == "text_completion" and body["model"] == "tiny"
            (choice,) = body["choices"]
            # the release layout ships no tokenizer: the engine serves token ids only, so no text
            assert choice["text"] == "" and choice["finish_reason"] == "length"
            prompt = PROMPTS[int(r["custom_id"].removeprefix("row-"))]
            assert body["usage"]["prompt_tokens"] == len(prompt) and body["usage"]["completion_tokens"] == 3

    # Re-running a finished batch rewrites the same output without touching the engine.
    out.unlink()
    assert grokd(_args(grok1_tiny_dir, inp, out, state)) == 0
    assert [json.loads(x) for x in out.read_text().splitlines()] == results


def test_offline_batch_rejects_bad_input(grok1_tiny_dir, tmp_path, capsys):
    inp = tmp_path / "bad.jsonl"
    _write_input(inp, "no-such-model")
    assert grokd(_args(grok1_tiny_dir, inp, tmp_path / "out.jsonl", tmp_path / "state")) == 1
    assert "model_not_found" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()
