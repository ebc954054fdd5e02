"""Server-sent events as OpenAI sends them: ``data: {json}`` + blank line, ``data: [DONE]`` at
the end, and ``data: {"error": {...}}`` (then end of stream) when the engine fails after the
stream started. Closing the stream — normally, on error, or because the client went away —
closes every engine request behind it, which aborts them and frees their KV blocks at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel
from starlette.responses import StreamingResponse

from grokd.engine.outputs import RequestOutput
from grokd.server.routes.generation import EngineCall

log = logging.getLogger("grokd.server")

DONE = b"data: [DONE]\n\n"
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Turns the merged ``(call index, output)`` stream into SSE event bytes.
Renderer = Callable[[AsyncIterator[tuple[int, RequestOutput]]], AsyncIterator[bytes]]


def encode_event(obj: BaseModel | dict[str, Any]) -> bytes:
    text = obj.model_dump_json() if isinstance(obj, BaseModel) else json.dumps(obj, separators=(",", ":"))
    return b"data: " + text.encode() + b"\n\n"


def error_event(message: str, type: str = "server_error", code: str | None = "engine_error") -> bytes:
    return encode_event({"error": {"message": message, "type": type, "param": None, "code": code}})


class StreamFailure(Exception):
    """Raised by a chunk renderer to end the stream with an in-band error event."""

    def __init__(self, message: str, type: str = "server_error", code: str | None = "engine_error") -> None:
        super().__init__(message)
        self.message, self.type, self.code = message, type, code


async def merge(calls: list[EngineCall]) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several engine streams as outputs arrive: ``(call index, output)``."""
    if len(calls) == 1:
        async for out in calls[0]:
            yield 0, out
        return
    queue: asyncio.Queue[tuple[int, RequestOutput | BaseException | None]] = asyncio.Queue()

    async def pump(i: int, call: EngineCall) -> None:
        try:
            async for out in call:
                await queue.put((i, out))
            await queue.put((i, None))
        except BaseException as exc:  # noqa: B036 - forwarded to the consumer
            await queue.put((i, exc))

    tasks = [asyncio.ensure_future(pump(i, c)) for i, c in enumerate(calls)]
    try:
        remaining = len(calls)
        while remaining:
            i, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()


def _default_failure(exc: StreamFailure) -> bytes:
    return error_event(exc.message, exc.type, exc.code)


def sse_response(
    calls: list[EngineCall],
    render: Renderer,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    done: bytes | None = DONE,
    on_failure: Callable[[StreamFailure], bytes] = _default_failure,
) -> StreamingResponse:
    """Stream ``render``'s events for ``calls`` and guarantee cleanup however the stream ends.

    ``done`` ends a stream that finished (OpenAI's ``data: [DONE]``; None for protocols without
    one); ``on_failure`` encodes the in-band error after a failure (an unexpected exception
    arrives as an ``internal_error`` StreamFailure)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for event in render(merge(calls)):
                yield event
            if done is not None:
                yield done
        except StreamFailure as exc:
            yield on_failure(exc)
        except Exception as exc:
            log.exception("stream %s failed", request_id)
            yield on_failure(StreamFailure(f"Internal error while streaming (request id {request_id}): {exc}",
                                           "server_error", "internal_error"))
        finally:
            for call in calls:
                await call.close()

    return StreamingResponse(body(), media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})

