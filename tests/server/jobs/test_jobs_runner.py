"""The batch runner: cap, priority, results, cancel, expiry, and resume after a crash."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

from grokd.server.jobs.config import BATCH_PRIORITY, JobsConfig
from grokd.server.jobs.runner import BatchRunner
from grokd.server.jobs.store import JobStore

from .jobs_helpers import FakeExecutor, answer_for, chat_line, jsonl


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _setup(tmp_path, n: int, executor, clock=None, fail=()):
    config = JobsConfig(state_dir=tmp_path, max_in_flight=3, poll_interval_s=0.05)
    store = JobStore(tmp_path)
    lines = [chat_line(f"req-{i}", f"prompt {i}") for i in range(n)]
    file_id = store.add_file("in.jsonl", "batch", [jsonl(lines)])["id"]
    now = clock() if clock else None
    batch = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, None, now=now)
    runner = BatchRunner(store, executor, config, clock=clock or Clock())
    return store, runner, batch["id"], lines


def _results(store: JobStore, batch: dict) -> list[dict]:
    out = []
    for key in ("output_file_id", "error_file_id"):
        if batch[key]:
            out += [json.loads(x) for x in store.file_path(batch[key]).read_text().splitlines()]
    return out


def test_batch_runs_to_completion_with_cap_and_priority(tmp_path):
    ex = FakeExecutor(delay=0.01, fail_contents=("prompt 3",))
    store, runner, batch_id, lines = _setup(tmp_path, 20, ex)
    asyncio.run(runner.run_until_idle())
    batch = store.get_batch(batch_id)
    assert batch["status"] == "completed" and batch["completed_at"] and batch["finalizing_at"]
    assert ex.max_in_flight <= 3 and set(ex.priorities) == {BATCH_PRIORITY}
    results = _results(store, batch)
    assert sorted(r["custom_id"] for r in results) == sorted(line["custom_id"] for line in lines)
    by_id = {r["custom_id"]: r for r in results}
    ok = by_id["req-0"]
    assert ok["response"]["status_code"] == 200 and ok["error"] is None and ok["id"].startswith("batch_req_")
    assert ok["response"]["body"]["choices"][0]["message"]["content"] == answer_for(lines[0]["body"])
    assert ok["response"]["request_id"] == ok["response"]["body"]["id"]
    failed = [json.loads(x) for x in store.file_path(batch["error_file_id"]).read_text().splitlines()]
    assert [f["custom_id"] for f in failed] == ["req-3"] and failed[0]["response"]["status_code"] == 400
    assert store.line_counts(batch_id)["done"] == 19


def test_validation_failure_runs_nothing(tmp_path):
    ex = FakeExecutor()
    store = JobStore(tmp_path)
    file_id = store.add_file("in.jsonl", "batch", [jsonl([chat_line("a", "x")]) + b"{bad\n"])["id"]
    batch_id = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, None)["id"]
    runner = BatchRunner(store, ex, JobsConfig(state_dir=tmp_path))
    asyncio.run(runner.run_until_idle())
    batch = store.get_batch(batch_id)
    assert batch["status"] == "failed" and batch["failed_at"]
    assert json.loads(batch["errors"])["data"][0]["line"] == 2
    assert not ex.calls


def test_cancel_aborts_in_flight_and_reports_cancelled_lines(tmp_path):
    ex = FakeExecutor()
    ex.gate = asyncio.Event()  # never opened: lines stay inside the 'engine' until aborted
    store, runner, batch_id, _ = _setup(tmp_path, 30, ex)

    async def scenario():
        task = asyncio.create_task(runner.run_until_idle())
        while ex.in_flight < 3:
            await asyncio.sleep(0.01)
        store.request_cancel(batch_id)
        await asyncio.wait_for(task, 5)
        assert ex.in_flight == 0  # the in-flight lines were aborted, not waited for

    asyncio.run(scenario())
    batch = store.get_batch(batch_id)
    assert batch["status"] == "cancelled" and batch["cancelled_at"] and batch["output_file_id"] is None
    assert sum(ex.calls.values()) == runner.lines_started == 3  # no new lines after the cancel
    assert store.line_counts(batch_id)["cancelled"] == 30
    errors = [json.loads(x) for x in store.file_path(batch["error_file_id"]).read_text().splitlines()]
    assert len(errors) == 30 and all(e["error"]["code"] == "batch_cancelled" for e in errors)


def test_other_batches_are_validated_and_cancelled_while_one_runs(tmp_path):
    ex = FakeExecutor()
    ex.gate = asyncio.Event()
    store, runner, first, _ = _setup(tmp_path, 30, ex)
    file_id = store.add_file("b.jsonl", "batch", [jsonl([chat_line("x", "y")])])["id"]
    second = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, None)["id"]
    bad_id = store.add_file("c.jsonl", "batch", [b"{oops\n"])["id"]
    third = store.create_batch(bad_id, "/v1/chat/completions", "24h", 86400, None)["id"]

    async def scenario():
        task = asyncio.create_task(runner.run_until_idle())
        while store.get_batch(first)["status"] != "in_progress" or ex.in_flight < 3:
            await asyncio.sleep(0.01)
        ex.gate.set()
        ex.gate = asyncio.Event()  # lines issued from now on hang again
        for _ in range(200):
            if store.get_batch(second)["status"] == "in_progress" and store.get_batch(third)["status"] == "failed":
                break
            await asyncio.sleep(0.01)
        assert store.get_batch(second)["status"] == "in_progress"
        assert store.get_batch(third)["status"] == "failed"
        store.request_cancel(second)
        for _ in range(200):
            if store.get_batch(second)["status"] == "cancelled":
                break
            await asyncio.sleep(0.01)
        assert store.get_batch(second)["status"] == "cancelled"
        assert store.get_batch(first)["status"] == "in_progress"
        fourth = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, None, now=0)["id"]
        for _ in range(200):  # created long ago: its window closes while it waits its turn
            if store.get_batch(fourth)["status"] == "expired":
                break
            await asyncio.sleep(0.01)
        assert store.get_batch(fourth)["status"] == "expired"
        assert store.line_counts(fourth)["expired"] == 1
        store.request_cancel(first)
        await asyncio.wait_for(task, 5)

    asyncio.run(scenario())


def test_completion_window_expiry_marks_remaining_lines(tmp_path):
    clock = Clock()
    ex = FakeExecutor()
    ex.gate = asyncio.Event()
    store, runner, batch_id, _ = _setup(tmp_path, 10, ex, clock=clock)

    async def scenario():
        task = asyncio.create_task(runner.run_until_idle())
        while ex.in_flight < 3:
            await asyncio.sleep(0.01)
        clock.t += 86400  # the window closes while 3 lines are in the engine
        ex.gate.set()
        await task

    asyncio.run(scenario())
    batch = store.get_batch(batch_id)
    assert batch["status"] == "expired" and batch["expired_at"]
    counts = store.line_counts(batch_id)
    assert (counts["done"], counts["expired"]) == (3, 7)
    expired = [r for r in _results(store, batch) if r["error"]]
    assert len(expired) == 7 and {r["error"]["code"] for r in expired} == {"batch_expired"}


def test_queue_full_is_retried_not_failed(tmp_path):
    class Flaky(FakeExecutor):
        async def __call__(self, url, body, priority):
            if self.calls[body["messages"][-1]["content"]] == 0:
                self.calls[body["messages"][-1]["content"]] += 1
                return 429, {"error": {"message": "queue full", "type": "rate_limit_error"}}
            return await super().__call__(url, body, priority)

    ex = Flaky()
    store, runner, batch_id, _ = _setup(tmp_path, 2, ex)
    asyncio.run(runner.run_until_idle())
    assert store.line_counts(batch_id)["done"] == 2


def test_crash_mid_batch_resumes_without_redoing_finished_lines(tmp_path):
    """Stop the runner abruptly mid-way (in-flight lines abandoned), reopen the store as a new
    process would, and finish: every custom_id exactly once, nothing finished executed twice."""
    first = FakeExecutor(delay=0.005)
    store, runner, batch_id, lines = _setup(tmp_path, 40, first)

    async def crash_midway():
        runner.start()
        while store.line_counts(batch_id)["done"] < 15:
            await asyncio.sleep(0.005)
        await runner.stop()  # cancels in-flight executes: as lost as with kill -9

    asyncio.run(crash_midway())
    done_before = {r["custom_id"] for r in store.iter_lines(batch_id) if r["status"] == "done"}
    assert 15 <= len(done_before) < 40
    store.close()

    second = FakeExecutor()
    store2 = JobStore(tmp_path)
    runner2 = BatchRunner(store2, second, JobsConfig(state_dir=tmp_path, max_in_flight=3))
    asyncio.run(runner2.run_until_idle())
    batch = store2.get_batch(batch_id)
    assert batch["status"] == "completed"
    results = _results(store2, batch)
    assert Counter(r["custom_id"] for r in results) == Counter(line["custom_id"] for line in lines)
    prompts_of = {line["custom_id"]: line["body"]["messages"][0]["content"] for line in lines}
    assert not any(second.calls[prompts_of[cid]] for cid in done_before)  # finished lines not redone
    for r in results:
        body = next(line["body"] for line in lines if line["custom_id"] == r["custom_id"])
        assert r["response"]["body"]["choices"][0]["message"]["content"] == answer_for(body)


def test_crash_during_finalize_rebuilds_outputs(tmp_path):
    ex = FakeExecutor()
    store, runner, batch_id, lines = _setup(tmp_path, 5, ex)
    asyncio.run(runner.run_until_idle())
    # Simulate dying after 'finalizing' was committed but before the files: roll status back.
    with store._tx() as conn:
        conn.execute("UPDATE batches SET status='finalizing', output_file_id=NULL WHERE id=?", (batch_id,))
    runner2 = BatchRunner(JobStore(tmp_path), FakeExecutor(), JobsConfig(state_dir=tmp_path))
    asyncio.run(runner2.run_until_idle())
    batch = runner2.store.get_batch(batch_id)
    assert batch["status"] == "completed" and len(_results(runner2.store, batch)) == 5
    assert runner2.lines_started == 0


def test_interactive_traffic_lowers_the_cap_and_preempts_the_newest_lines(tmp_path):
    config = JobsConfig(state_dir=tmp_path, max_in_flight=2, idle_max_in_flight=6, idle_after_s=0.3,
                        cancel_poll_s=0.02)
    store = JobStore(tmp_path)
    file_id = store.add_file("in.jsonl", "batch", [jsonl([chat_line(f"c{i}", f"p{i}") for i in range(30)])])["id"]
    batch_id = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, None)["id"]
    load = {"interactive": 0}
    ex = FakeExecutor()
    ex.gate = asyncio.Event()
    runner = BatchRunner(store, ex, config, interactive_load=lambda: load["interactive"])

    async def scenario():
        task = asyncio.create_task(runner.run_until_idle())
        while ex.in_flight < 6:  # idle engine: the high cap
            await asyncio.sleep(0.005)
        load["interactive"] = 1
        for _ in range(100):
            if ex.in_flight <= 2:
                break
            await asyncio.sleep(0.01)
        assert ex.in_flight == 2 and runner.lines_preempted == 4  # the 4 newest went back to pending
        ex.gate.set()
        while store.line_counts(batch_id)["done"] < 10:
            await asyncio.sleep(0.005)
        assert ex.max_in_flight == 6
        ex.max_in_flight = 0
        await asyncio.sleep(0.05)
        assert ex.max_in_flight <= 2  # busy engine: the low cap
        load["interactive"] = 0
        await task

    asyncio.run(scenario())
    assert store.get_batch(batch_id)["status"] == "completed"
    assert store.line_counts(batch_id)["done"] == 30
