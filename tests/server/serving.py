"""Run a real grokd server for tests: uvicorn on a free 127.0.0.1 port, in a background thread
(in-process, so a test can also read engine stats) or as a ``grokd serve`` subprocess (for
signals). Nothing here mocks a grokd component."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from grokd.server.app import create_app
from grokd.server.config import ServerConfig
from grokd.server.http_limits import uvicorn_config
from grokd.server.state import ServerState

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    state: ServerState
    app: Any
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)


def start_server(config: ServerConfig, *, setup: Any = None, timeout: float = 300.0) -> LiveServer:
    """Load the model named by ``config``, serve it in a thread, return once /ready answers."""
    from grokd.engine.async_engine import AsyncEngine

    state = ServerState.build(config, AsyncEngine(config.engine_config()))
    live = serve_state(state, setup=setup)
    wait_ready(live.url, timeout)
    return live


def serve_state(state: ServerState, *, setup: Any = None) -> LiveServer:
    """Serve ``state`` (loaded or still loading) in a thread; returns once the socket listens."""
    config = state.config
    config.port = config.port if config.port not in (0, 8000) else free_port()
    app = create_app(state)
    if setup is not None:
        setup(app)
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", config.port, config.connection_limits(),
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, name="grokd-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    return LiveServer(f"http://127.0.0.1:{config.port}", state, app, server, thread)


def wait_until(pred: Any, timeout: float = 10.0) -> bool:
    """Poll ``pred`` every 20 ms until it holds or ``timeout`` passes; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return bool(pred())


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready after {timeout}s")


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def start_process(args: list[str], timeout: float = 300.0, env: dict[str, str] | None = None) -> ServerProcess:
    """``grokd serve ARGS --port P`` as a child process (``env`` added to ours, e.g. secrets a
    flag must not carry); returns once /ready answers."""
    port = free_port()
    env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "grokd.server.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout)
    except TimeoutError:
        proc.kill()
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        raise TimeoutError(f"grokd serve did not become ready:\n{out[-4000:]}") from None
    return ServerProcess(url, proc)
