"""A tiny real HTTP server on 127.0.0.1 standing in for external services (X API, RSS hosts):
routes by path, records every request so a test can count what reached it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


@dataclass
class StubRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]


Reply = tuple[int, dict[str, str], bytes]
Handler = Callable[[StubRequest], Reply]


@dataclass
class StubServer:
    host: str
    port: int
    routes: dict[str, Handler] = field(default_factory=dict)
    requests: list[StubRequest] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def hits(self, path: str) -> int:
        return sum(r.path == path for r in self.requests)


def _handler_class(stub: StubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            request = StubRequest(
                "GET",
                parts.path,
                {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                {k.lower(): v for k, v in self.headers.items()},
            )
            stub.requests.append(request)
            route = stub.routes.get(parts.path)
            status, headers, body = route(request) if route else (404, {}, b"not found")
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def serve_stub() -> Iterator[StubServer]:
    """A stub listening on a free 127.0.0.1 port until the block exits."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = StubServer("127.0.0.1", server.server_address[1])
    server.RequestHandlerClass = _handler_class(state)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
