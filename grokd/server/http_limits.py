"""HTTP connection limits: uvicorn's h11 protocol with read deadlines, and the uvicorn config
``grokd serve`` (and the test servers) run with.

uvicorn alone bounds what a request head may hold (h11's incomplete-event size) and how long a
connection may sit idle *after* a response (``timeout_keep_alive``), but not how long a client may
take to send a request: a client that sends its headers or body one byte a second (slowloris)
holds a connection, and a connection that never sends anything is held for ever. This protocol
adds three timers, all on the event loop (no thread, no per-connection task):

- idle: a fresh connection that sends nothing is closed after the keep-alive timeout, the same
  rule uvicorn applies between requests;
- head: from a request's first byte, its whole head (request line and headers) must arrive
  within ``request_header_timeout_s``, else the server answers 408 and closes;
- body: once the head is in, the whole body must arrive within ``request_body_timeout_s``;
  else the request sees a disconnect, the client gets a 408 (when no response has started) and
  the connection closes.

``limit_concurrency`` (uvicorn's: connections plus running requests; beyond it new requests get
503) stays available as a hard cap; idle connections are cheap here because they are closed.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from grokd.server.errors import APIError

H11_DEFAULT_MAX_HEADER_BYTES = 16 * 1024  # h11's own default for the incomplete-event size


@dataclass(frozen=True)
class ConnectionLimits:
    """What :class:`GuardedH11Protocol` enforces (``ServerConfig.connection_limits``)."""

    timeout_keep_alive_s: int = 5
    request_header_timeout_s: float = 10.0
    request_body_timeout_s: float = 60.0
    limit_concurrency: int | None = None
    max_header_bytes: int = H11_DEFAULT_MAX_HEADER_BYTES


# set in a request's ASGI scope["state"] when its body missed the deadline (the server answered 408 itself)
BODY_TIMED_OUT = "grokd.body_timed_out"

def _timeout_response(what: str, seconds: float) -> tuple[list[tuple[bytes, bytes]], bytes]:
    err = APIError(408, f"The request {what} did not arrive within {seconds:g} seconds.", code="request_timeout")
    body = json.dumps(err.body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return headers, body


LINGER_S = 2.0


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol plus the idle, head and body deadlines described above."""

    limits = ConnectionLimits()  # replaced per server by :func:`protocol_for`

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        self._lingering = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # idle before the first request: the same timer (and handler) as idle between requests
        self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return  # the 408 is out; what still trickles in is read and dropped (see _close_after_408)
        if self.conn.their_state is h11.IDLE and self._read_deadline is None:
            self._arm(self.limits.request_header_timeout_s, self._head_timed_out)
        before = self.conn.their_state
        super().data_received(data)
        self._follow_state(before)

    def on_response_complete(self) -> None:
        before = self.conn.their_state
        super().on_response_complete()  # may start the next pipelined request
        self._follow_state(before)

    def _follow_state(self, before: Any) -> None:
        """Move the deadline along with the client's side of the h11 state machine."""
        state = self.conn.their_state
        if state is before:
            return
        self._cancel_deadline()
        if state is h11.SEND_BODY:
            self._arm(self.limits.request_body_timeout_s, self._body_timed_out)

    def _arm(self, seconds: float, handler: Any) -> None:
        self._cancel_deadline()
        self._read_deadline = self.loop.call_later(seconds, handler)

    def _cancel_deadline(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _head_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        # h11 will not send a response before it has parsed a request, so the 408 is written raw
        headers, body = _timeout_response("headers", self.limits.request_header_timeout_s)
        head = b"HTTP/1.1 408 Request Timeout\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers)
        self.transport.write(head + b"\r\n" + body)
        self._close_after_408()

    def _body_timed_out(self) -> None:
        self._read_deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None or self.conn.their_state is not h11.SEND_BODY:
            return
        if not cycle.response_started and self.conn.our_state is h11.SEND_RESPONSE:
            headers, body = _timeout_response("body", self.limits.request_body_timeout_s)
            output = self.conn.send(h11.Response(status_code=408, headers=headers, reason=b"Request Timeout"))
            output += self.conn.send(h11.Data(data=body)) or b""
            output += self.conn.send(h11.EndOfMessage()) or b""
            self.transport.write(output or b"")
        cycle.scope.setdefault("state", {})[BODY_TIMED_OUT] = True  # its metrics say 408, not a client that left
        cycle.disconnected = True  # the app's receive() now says http.disconnect; its sends are dropped
        cycle.message_event.set()
        self._close_after_408()

    def _close_after_408(self) -> None:
        """A lingering close: send FIN after the 408 and drop what the client still sends for
        ``LINGER_S`` before closing. Closing at once while the client is still sending makes the
        kernel answer its next bytes with a reset, which can discard the 408 before it is read."""
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)


def protocol_for(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """A protocol class bound to ``limits`` (uvicorn instantiates the class it is given)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})


def uvicorn_config(app: Any, host: str, port: int, limits: ConnectionLimits, **kwargs: Any) -> uvicorn.Config:
    """The uvicorn config every grokd HTTP server runs with (``kwargs``: log level, loop, ...)."""
    return uvicorn.Config(
        app, host=host, port=port, http=protocol_for(limits),
        timeout_keep_alive=limits.timeout_keep_alive_s,
        limit_concurrency=limits.limit_concurrency,
        h11_max_incomplete_event_size=limits.max_header_bytes,
        **kwargs,
    )
