"""Server-sent events as OpenAI sends them: ``data: {json}`` + blank line, ``data: [DONE]`` at
the end, and ``data: {"error": {...}}`` (then end of stream) when the engine fails after the
stream started. Closing the stream — normally, on error, or because the client went away —
closes every engine request behind it, which aborts them and frees their KV blocks at once.

A client that stays connected but stops reading is a stall: the socket's buffers fill, uvicorn
pauses the writer, and each write waits. No write may wait longer than ``--stream-stall-timeout``:
past it the stream is closed like a disconnect (engine requests aborted, blocks freed) and the
connection dropped. Until then at most ``max_pending_outputs`` outputs per request queue up behind
the blocked writer (``engine.async_engine``), so a stalled client costs bounded memory either way.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Message, Send

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


class StallGuardedResponse(StreamingResponse):
    """A streamed response whose every write to the client must finish within ``stall_timeout_s``;
    a write that does not (the client stopped reading) closes the body, whose cleanup aborts the
    engine requests, and ends the response unfinished, so uvicorn drops the connection."""

    def __init__(self, content: AsyncIterator[bytes], *, stall_timeout_s: float, request_id: str,
                 media_type: str, headers: dict[str, str]) -> None:
        super().__init__(content, media_type=media_type, headers=headers)
        self.stall_timeout_s = stall_timeout_s
        self.request_id = request_id
        self._body = content

    async def stream_response(self, send: Send) -> None:
        async def timed_send(message: Message) -> None:
            with anyio.fail_after(self.stall_timeout_s):
                await send(message)

        try:
            await super().stream_response(timed_send)
        except TimeoutError:
            log.warning("stream %s: the client read nothing for %.1fs; aborted", self.request_id,
                        self.stall_timeout_s)
            aclose = getattr(self._body, "aclose", None)
            if aclose is not None:
                await aclose()


def _default_failure(exc: StreamFailure) -> bytes:
    return error_event(exc.message, exc.type, exc.code)


def sse_response(
    calls: list[EngineCall],
    render: Renderer,
    request_id: str,
    headers: dict[str, str] | None = None,
    *,
    stall_timeout_s: float,
    done: bytes | None = DONE,
    on_failure: Callable[[StreamFailure], bytes] = _default_failure,
) -> StreamingResponse:
    """Stream ``render``'s events for ``calls`` and guarantee cleanup however the stream ends
    (a client that reads nothing for ``stall_timeout_s`` included).

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

    return StallGuardedResponse(body(), stall_timeout_s=stall_timeout_s, request_id=request_id,
                                media_type="text/event-stream", headers={**SSE_HEADERS, **(headers or {})})

