"""xAI deferred chat completions: answer ``{"request_id"}`` now, the completion later
(the chat route submits, ``deferred_completions`` serves the result).

The request is committed to the store before its id is returned, so a restart re-runs whatever
was still pending; the result is kept until it is fetched once (or for the retention period).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable

from fastapi import Response
from fastapi.responses import JSONResponse

from grokd.server.errors import APIError
from grokd.server.jobs.config import INTERACTIVE_PRIORITY, Execute, JobsConfig
from grokd.server.jobs.retry import execute_patiently
from grokd.server.jobs.store import ANONYMOUS_OWNER, JobStore

CHAT_URL = "/v1/chat/completions"
PURGE_INTERVAL_S = 600.0


class DeferredService:
    """Runs deferred chat requests in the background at interactive priority."""

    def __init__(
        self, store: JobStore, execute: Execute, config: JobsConfig, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.execute = execute
        self.config = config
        self.clock = clock
        self._slots = asyncio.Semaphore(config.deferred_max_in_flight)
        self._tasks: set[asyncio.Task] = set()
        self._purger: asyncio.Task | None = None

    def start(self) -> None:
        """Purge expired results and re-run every request a previous process left pending."""
        self.store.purge_deferred(self.clock())
        for row in self.store.pending_deferred():
            self._spawn(row["request_id"], json.loads(row["body"]))
        if self._purger is None:
            self._purger = asyncio.create_task(self._purge_loop(), name="grokd-deferred-purge")

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._purger] if self._purger else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._purger = None

    def submit(self, body: dict, owner: str = ANONYMOUS_OWNER) -> str:
        """Store a chat body (``deferred``/``stream`` stripped) and start it; returns the request id.

        Must be called from the event loop (the chat route does, when ``body["deferred"]``).
        """
        body = {k: v for k, v in body.items() if k not in ("deferred", "stream", "stream_options")}
        request_id = str(uuid.uuid4())
        self.store.add_deferred(request_id, body, self.clock(), self.config.deferred_retention_s, owner)
        self._spawn(request_id, body)
        return request_id

    def _spawn(self, request_id: str, body: dict) -> None:
        task = asyncio.create_task(self._run(request_id, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request_id: str, body: dict) -> None:
        async with self._slots:
            answer = await execute_patiently(self.execute, CHAT_URL, body, INTERACTIVE_PRIORITY)
        if answer is not None:
            await asyncio.to_thread(self.store.set_deferred_result, request_id, *answer)

    async def _purge_loop(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL_S)
            with contextlib.suppress(Exception):
                self.store.purge_deferred(self.clock())

    def take(self, request_id: str, owner: str | None = None) -> tuple[int, dict] | None:
        """``(status, chat answer)`` exactly once; None while pending; 404 for an id that is
        unknown, expired, already fetched or another ``owner``'s (``None``: any key's)."""
        state, status, body = self.store.take_deferred(request_id, self.clock(), owner)
        if state == "pending":
            return None
        if state == "missing" or body is None:
            raise APIError(
                404,
                f"No deferred completion with request id {request_id!r} (unknown, expired or already fetched).",
                type="not_found_error",
                code="not_found",
                param="request_id",
            )
        return status or 200, body

    def fetch(self, request_id: str, owner: str | None = None) -> Response:
        """202 while pending, the stored answer exactly once, then 404 (see :meth:`take`)."""
        answer = self.take(request_id, owner)
        if answer is None:
            return Response(status_code=202)
        return JSONResponse(answer[1], status_code=answer[0])
