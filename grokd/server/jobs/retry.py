"""Run one job request, waiting out transient refusals instead of recording them as results.

429 (engine queue full) and 503 (not ready, draining for shutdown) say "not now", not "this
request is bad": a batch line or deferred request that got one stays pending and is retried
with capped backoff until it is accepted or its job stops (cancel, expiry, shutdown).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from grokd.server.jobs.config import Execute

log = logging.getLogger("grokd.jobs")

TRANSIENT_STATUSES = frozenset({429, 503})
MAX_BACKOFF_S = 8.0


def server_error(message: str) -> dict:
    return {"error": {"message": message, "type": "server_error", "param": None, "code": "internal_error"}}


async def execute_patiently(
    execute: Execute,
    url: str,
    body: dict,
    priority: int,
    should_stop: Callable[[], bool] = lambda: False,
    base_backoff_s: float = 0.25,
) -> tuple[int, dict] | None:
    """``(status, body)`` of the first non-transient answer; ``None`` if told to stop first.

    An exception from ``execute`` becomes a 500 result (what the route would have answered).
    """
    attempt = 0
    while True:
        try:
            status, response = await execute(url, body, priority)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job request to %s raised", url)
            return 500, server_error(f"internal error: {type(exc).__name__}")
        if status not in TRANSIENT_STATUSES:
            return status, response
        await asyncio.sleep(min(base_backoff_s * 2**attempt, MAX_BACKOFF_S))
        attempt += 1
        if should_stop():
            return None
