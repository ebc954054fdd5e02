"""Slow and idle clients against a real server (the default model on 127.0.0.1, short limits):
slowloris heads and bodies get a 408 and are closed within their deadline while other clients
are served, and many idle connections neither block a normal request nor stay open past the
keep-alive timeout."""

from __future__ import annotations

import argparse
import json
import resource
import socket
import threading
import time

import httpx
import pytest

from grokd.server.config import ServerConfig, load_config
from grokd.server.http_limits import ConnectionLimits
from grokd.server.serve_cli import add_arguments
from tests.server.serving import LiveServer, start_server

HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 2
SLACK_S = 3.0  # a loaded 2-core box: timers fire late, not early


@pytest.fixture(scope="module")
def server(smollm2_gguf) -> LiveServer:
    live = start_server(ServerConfig(dtype="float32", max_model_len=256, request_header_timeout_s=HEADER_TIMEOUT_S,
                                     request_body_timeout_s=BODY_TIMEOUT_S, timeout_keep_alive_s=KEEP_ALIVE_S))
    yield live
    live.stop()


def _chat_ok(server: LiveServer) -> None:
    model = httpx.get(server.base_url + "/models", timeout=30).json()["data"][0]["id"]
    r = httpx.post(server.base_url + "/chat/completions", timeout=60, json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert r.status_code == 200, r.text


def _connect(server: LiveServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed."""
    sock.settimeout(timeout)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic()
        data += chunk


def _trickle(sock: socket.socket, payload: bytes, every_s: float, stop: threading.Event) -> None:
    for byte in payload:
        if stop.wait(every_s):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed by the server: what the test waits for
            return


def _slow_client(server: LiveServer, prefix: bytes, trickled: bytes) -> tuple[bytes, float, float]:
    """Send ``prefix`` at once, then ``trickled`` a byte a second, with a normal chat request
    served meanwhile; (what came back, when the server closed, when the slow part began)."""
    sock = _connect(server)
    stop = threading.Event()
    got: list[tuple[bytes, float]] = []
    try:
        sock.sendall(prefix)
        began = time.monotonic()
        writer = threading.Thread(target=_trickle, args=(sock, trickled, 1.0, stop), daemon=True)
        reader = threading.Thread(target=lambda: got.append(_read_until_closed(sock, 60)), daemon=True)
        writer.start()
        reader.start()
        _chat_ok(server)  # other clients are served while the slow one trickles
        reader.join(60)
        assert got, "the slow connection was never closed"
        return got[0][0], got[0][1], began
    finally:
        stop.set()
        sock.close()


def test_headers_sent_a_byte_a_second_get_a_408_within_the_deadline(server: LiveServer) -> None:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"X-Pad: a\r\n" * 50
    data, closed, began = _slow_client(server, b"", head)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    body = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert body["error"]["code"] == "request_timeout" and "headers" in body["error"]["message"]
    assert closed - began < HEADER_TIMEOUT_S + SLACK_S + 1.0  # + the byte that started the clock
    _chat_ok(server)


def test_a_body_sent_a_byte_a_second_gets_a_408_within_the_deadline(server: LiveServer) -> None:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 100}]}).encode()
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    data, closed, began = _slow_client(server, head, body)
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    payload = json.loads(data.split(b"\r\n\r\n", 1)[1])
    assert payload["error"]["code"] == "request_timeout" and "body" in payload["error"]["message"]
    assert closed - began < BODY_TIMEOUT_S + SLACK_S
    _chat_ok(server)
    # counted as the 408 it got, not as a server error
    metrics = httpx.get(server.url + "/metrics").text
    assert 'grokd_http_requests_total{method="POST",route="/v1/chat/completions",status="408"}' in metrics
    assert 'route="/v1/chat/completions",status="500"' not in metrics


def test_many_idle_connections_do_not_block_a_request_and_are_closed(server: LiveServer) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    # client and server ends of each connection are both in this process; keep room for the rest
    count = min(1000, (soft - 256) // 2)
    assert count >= 100, f"ulimit -n is {soft}: too low to open idle connections"
    socks = [_connect(server) for _ in range(count)]
    try:
        for s in socks[:50]:  # some kept alive after a request, the rest never sent a byte
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        for s in socks[:50]:
            s.settimeout(10)
            assert s.recv(4096).startswith(b"HTTP/1.1 200 ")
        opened = time.monotonic()
        _chat_ok(server)
        deadline = opened + KEEP_ALIVE_S + 3 * SLACK_S
        still_open = 0
        for s in socks:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
            except TimeoutError:
                still_open += 1
        assert still_open == 0, f"{still_open} of {count} idle connections still open after the keep-alive timeout"
    finally:
        for s in socks:
            s.close()
    _chat_ok(server)


def test_connection_flags_reach_the_limits() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--timeout-keep-alive", "7", "--request-header-timeout-s", "3",
                              "--request-body-timeout-s", "90", "--limit-concurrency", "500",
                              "--max-header-bytes", "32K"])
    cli = {k: v for k, v in vars(args).items() if k != "config"}
    assert load_config(cli, env={}).connection_limits() == ConnectionLimits(
        timeout_keep_alive_s=7, request_header_timeout_s=3.0, request_body_timeout_s=90.0,
        limit_concurrency=500, max_header_bytes=32 * 1024)
    with pytest.raises(ValueError, match="request_body_timeout_s"):
        load_config({"request_body_timeout_s": 0}, env={})
