"""``execute(url, body, priority)`` as an in-process call through the ASGI app itself.

A batch line or deferred request then gets exactly what the HTTP route would answer (the same
validation, model resolution, error envelope and usage counting) without a socket, and without
this package knowing anything about the routes. The call is marked in the ASGI scope's
``state`` — which clients cannot set — so handlers see ``request.state.priority`` (pass it to
the engine) and ``request.state.internal_caller`` (auth: the submitting request was already
authenticated when the job was accepted).
"""

from __future__ import annotations

import asyncio
import json

from starlette.types import ASGIApp, Message, Scope

from grokd.server.jobs.config import Execute


def asgi_executor(app: ASGIApp, host: str = "grokd.internal") -> Execute:
    """Build an ``Execute`` that POSTs ``body`` to ``url`` on ``app`` in-process."""

    async def execute(url: str, body: dict, priority: int) -> tuple[int, dict]:
        payload = json.dumps(body).encode()
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": url,
            "raw_path": url.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", host.encode()),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
            "client": ("127.0.0.1", 0),
            "server": (host, 80),
            "state": {"priority": priority, "internal_caller": True},
        }
        finished = asyncio.Event()
        sent_body = False
        status = 500
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await finished.wait()  # never "disconnect" while the route is still working
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    finished.set()

        try:
            await app(scope, receive, send)
        finally:
            finished.set()
        raw = b"".join(chunks)
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"error": {"message": raw.decode("utf-8", "replace")[:500], "type": "server_error",
                                "param": None, "code": "invalid_response"}}
            status = status if status >= 400 else 500
        return status, parsed if isinstance(parsed, dict) else {"data": parsed}

    return execute
