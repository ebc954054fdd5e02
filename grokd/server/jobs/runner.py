"""The batch runner: moves stored batches through validating -> in_progress -> terminal.

It holds no state of its own that matters after a crash: which lines are left is read from the
store, each finished line is committed before the next slot opens, and a line that was inside
the engine when the process died is simply still ``pending`` and runs again. Lines enter the
engine at batch priority under an in-flight cap that drops to ``max_in_flight`` (and aborts the
newest lines over it back to pending) as soon as interactive requests use the engine, so their
time-to-first-token holds; an idle engine gets ``idle_max_in_flight`` lines for throughput.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator

from grokd.server.jobs.config import BATCH_PRIORITY, Execute, JobsConfig
from grokd.server.jobs.objects import CANCELLED_ERROR, EXPIRED_ERROR, output_line
from grokd.server.jobs.retry import execute_patiently
from grokd.server.jobs.store import JobStore, new_id
from grokd.server.jobs.validation import BodyValidator, ModelExists, validate_batch_file

log = logging.getLogger("grokd.jobs")

ACTIVE_STATUSES = ("validating", "in_progress", "cancelling", "finalizing")


async def _cancel_until_done(tasks: set[asyncio.Task]) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again while any is still running: on Python
    3.11 ``asyncio.wait_for`` loses a cancellation that races with its inner wait finishing (fixed
    in 3.12), and the runner waits in ``wait_for`` often, so a single ``cancel()`` could leave
    ``stop()`` waiting forever (tests/server/jobs/test_jobs_runner.py hung that way)."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:  # collect outcomes, so none is reported as never retrieved
        if not task.cancelled():
            task.exception()


class BatchRunner:
    """Drives every active batch in the store; ``notify()`` wakes it after a create or cancel."""

    def __init__(
        self,
        store: JobStore,
        execute: Execute,
        config: JobsConfig,
        body_validator: BodyValidator | None = None,
        model_exists: ModelExists | None = None,
        clock: Callable[[], float] = time.time,
        interactive_load: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        self.execute = execute
        self.config = config
        self.body_validator = body_validator
        self.model_exists = model_exists
        self.clock = clock
        self._wake = asyncio.Event()
        self.interactive_load = interactive_load  # engine requests that are not batch lines
        self._running = 0
        self._freed = asyncio.Event()
        self._last_interactive = float("-inf")
        self._in_flight: set[asyncio.Task] = set()
        self._task: asyncio.Task | None = None
        self._stopping = False  # set while stop() runs
        self._loop: asyncio.AbstractEventLoop | None = None
        self.lines_started = 0  # observability + tests: how many executes were issued
        self.lines_preempted = 0  # aborted back to pending to make room for interactive traffic

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._task is None:
            self._task = asyncio.create_task(self._serve(), name="grokd-batch-runner")

    async def stop(self) -> None:
        """Stop issuing lines and abandon in-flight ones (they stay pending and rerun later)."""
        self._stopping = True  # a cancel lost in wait_for (see _cancel_until_done) lands at the next slot
        try:
            if self._task is not None:
                await _cancel_until_done({self._task})
                self._task = None
            await _cancel_until_done(set(self._in_flight))
        finally:
            self._stopping = False

    def notify(self) -> None:
        """Wake the runner now; safe from any thread (sync handlers run in a pool)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _serve(self) -> None:
        while True:
            if self._stopping:
                raise asyncio.CancelledError
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug must not kill the runner; the store is still consistent
                log.exception("batch runner step failed; retrying")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval_s)
            self._wake.clear()

    async def run_once(self) -> int:
        """Advance every active batch as far as it goes; returns how many were active."""
        batches = self.store.batches_with_status(*ACTIVE_STATUSES)
        for batch in batches:
            await self._advance(batch["id"])
        return len(batches)

    async def run_until_idle(self) -> None:
        """Run until no batch is active (CLI and tests)."""
        while await self.run_once():
            pass

    # -- the in-flight cap -------------------------------------------------------------------

    def current_cap(self) -> int:
        """The low cap while interactive requests use the engine (or did a moment ago)."""
        if self.interactive_load is None:
            return self.config.max_in_flight
        now = time.monotonic()
        if self.interactive_load() > 0:
            self._last_interactive = now
        if now - self._last_interactive < self.config.idle_after_s:
            return self.config.max_in_flight
        return max(self.config.max_in_flight, self.config.idle_max_in_flight)

    @property
    def in_flight(self) -> int:
        return self._running

    async def _acquire_slot(self) -> None:
        if self._stopping:  # no new line once stop() began, even if its cancel was lost
            raise asyncio.CancelledError
        while self._running >= self.current_cap():
            self._freed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._freed.wait(), 0.05)  # also re-reads the load
        self._running += 1

    def _release_slot(self) -> None:
        self._running -= 1
        self._freed.set()

    # -- state machine ----------------------------------------------------------------------

    async def _advance(self, batch_id: str) -> None:
        batch = self.store.get_batch(batch_id)
        if batch is None:
            return
        if batch["status"] == "validating":
            await self._validate(batch)
            batch = self.store.get_batch(batch_id)
            assert batch is not None, "batches are never deleted"
        if batch["status"] == "in_progress":
            await self._run_lines(batch)
        await self._finish(batch_id)

    async def _validate(self, batch: dict) -> None:
        path = self.store.file_path(batch["input_file_id"])
        if self.store.get_file(batch["input_file_id"]) is None or not path.exists():
            self.store.fail_batch(
                batch["id"],
                [{"code": "file_not_found", "message": "the input file no longer exists", "line": None,
                  "param": "input_file_id"}],
                now=self.clock(),
            )
            return
        data = await asyncio.to_thread(path.read_bytes)
        result = await asyncio.to_thread(
            validate_batch_file, data, batch["endpoint"], self.body_validator, self.model_exists
        )
        if result.ok:
            await asyncio.to_thread(self.store.start_batch, batch["id"], result.lines, self.clock())
        else:
            self.store.fail_batch(batch["id"], result.errors, now=self.clock())

    async def _housekeeping(self, running: str) -> None:
        """While one batch runs, the others are still validated, cancelled and expired on time."""
        now = self.clock()
        for other in self.store.batches_with_status("validating", "cancelling", "in_progress"):
            if other["id"] == running or (other["status"] == "in_progress" and now < other["expires_at"]):
                continue
            if other["status"] == "validating":
                await self._validate(other)
            await self._finish(other["id"])

    def _stop_reason(self, batch_id: str) -> str | None:
        batch = self.store.get_batch(batch_id)
        if batch is None or batch["status"] == "cancelling":
            return "cancelled"
        if self.clock() >= batch["expires_at"]:
            return "expired"
        return None

    async def _run_lines(self, batch: dict) -> None:
        """Issue pending lines under the in-flight cap until none are left or the batch stops.

        Lines preempted for interactive traffic are still pending; once this pass has drained,
        another pass picks them up.
        """
        batch_id, endpoint = batch["id"], batch["endpoint"]
        mine: dict[asyncio.Task, None] = {}  # insertion order = start order (newest preempted first)
        watcher = asyncio.create_task(self._watch(batch_id, mine))
        try:
            while self._stop_reason(batch_id) is None:
                after, issued = -1, 0
                while (rows := self.store.pending_lines(batch_id, limit=64, after_line=after)):
                    for row in rows:
                        await self._acquire_slot()
                        if self._stop_reason(batch_id) is not None:
                            self._release_slot()
                            break
                        self._issue(batch_id, endpoint, row, mine)
                        after, issued = row["line_no"], issued + 1
                    else:
                        continue
                    break
                await asyncio.gather(*mine, return_exceptions=True)
                if not issued:
                    break
        except asyncio.CancelledError:
            for task in mine:
                task.cancel()
            raise
        finally:
            watcher.cancel()

    def _issue(self, batch_id: str, endpoint: str, row: dict, mine: dict[asyncio.Task, None]) -> None:
        task = asyncio.create_task(self._run_line(batch_id, endpoint, row))
        self.lines_started += 1
        mine[task] = None
        self._in_flight.add(task)
        task.add_done_callback(lambda t: mine.pop(t, None))
        task.add_done_callback(self._in_flight.discard)
        task.add_done_callback(lambda _t: self._release_slot())

    async def _run_line(self, batch_id: str, endpoint: str, row: dict) -> None:
        body = json.loads(row["body"])
        answer = await execute_patiently(self.execute, endpoint, body, BATCH_PRIORITY,
                                         lambda: self._stop_reason(batch_id) is not None)
        if answer is None:
            return  # the batch stopped while this line waited; _finish closes it
        status, response = answer
        request_id = response.get("id") if isinstance(response, dict) else None
        result = {"status_code": status, "request_id": request_id or new_id("req_"), "body": response}
        line_status = "done" if 200 <= status < 300 else "failed"
        await asyncio.to_thread(
            self.store.record_result, batch_id, row["line_no"], line_status, result, None, self.clock()
        )

    async def _watch(self, batch_id: str, mine: dict[asyncio.Task, None]) -> None:
        """Beside a running batch: a cancel aborts its in-flight lines at once (they stay pending
        and are closed as cancelled; expiry lets them finish instead); when interactive traffic
        lowers the cap, the newest lines over it are aborted back to pending so the engine is
        the interactive requests' again; other batches are validated/cancelled/expired on time."""
        while True:
            await asyncio.sleep(self.config.cancel_poll_s)
            try:
                batch = self.store.get_batch(batch_id)
                active = [t for t in mine if not t.done() and not t.cancelling()]
                if batch is None or batch["status"] == "cancelling":
                    victims = active
                else:
                    victims = active[self.current_cap():][::-1]
                    self.lines_preempted += len(victims)
                for task in victims:
                    task.cancel()
                await self._housekeeping(running=batch_id)
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching; the main loop retries the failed batch later
                log.exception("batch runner housekeeping failed")

    async def _finish(self, batch_id: str) -> None:
        """Close a batch with no work left: pending lines of a cancelled/expired batch get their
        error, then the result files are written and the terminal status set in one go."""
        batch = self.store.get_batch(batch_id)
        if batch is None or batch["status"] not in ("in_progress", "cancelling", "finalizing"):
            return
        now = self.clock()
        counts = self.store.line_counts(batch_id)
        if batch["status"] == "cancelling":
            self.store.close_pending(batch_id, "cancelled", CANCELLED_ERROR, now=now)
            final = "cancelled"
        elif not counts["pending"]:
            final = "expired" if counts["expired"] else "completed"
            if final == "completed":
                self.store.set_finalizing(batch_id, now=now)
        elif now >= batch["expires_at"]:
            self.store.close_pending(batch_id, "expired", EXPIRED_ERROR, now=now)
            final = "expired"
        else:
            return  # still work to do (the runner was stopped mid-way)
        await asyncio.to_thread(self._write_results, batch_id, final)
        log.info("batch %s %s", batch_id, final)

    def _write_results(self, batch_id: str, final: str) -> None:
        counts = self.store.line_counts(batch_id)
        bad = counts["failed"] + counts["expired"] + counts["cancelled"]
        output = (f"{batch_id}_output.jsonl", "batch_output", self._lines(batch_id, ok=True)) if counts["done"] else None
        errors = (f"{batch_id}_error.jsonl", "batch_output", self._lines(batch_id, ok=False)) if bad else None
        self.store.finish_batch(batch_id, final, output, errors, now=self.clock())

    def _lines(self, batch_id: str, ok: bool) -> Iterator[bytes]:
        for line in self.store.iter_lines(batch_id):
            if (line["status"] == "done") == ok:
                yield (json.dumps(output_line(line)) + "\n").encode()
