"""The FastAPI application: routers, error handlers and one ASGI middleware that gives every
response an ``x-request-id``, enforces the body limit, refuses work while not ready or
draining, turns stray exceptions into a 500 envelope carrying the request id, and counts
requests for /metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grokd.server.auth import Authenticator, require_api_key
from grokd.server.config import ServerConfig
from grokd.server.errors import APIError, install_error_handlers, overloaded
from grokd.server.metrics import ServerMetrics
from grokd.server.registry import ModelRegistry, default_served_name, engine_version
from grokd.server.routes import api_key, chat, completions, health, models, tokenize

log = logging.getLogger("grokd.server")

# Health/metrics routes are public; the rest need a key.
PUBLIC_ROUTERS = (health.router,)
V1_ROUTERS = (chat.router, completions.router, models.router, tokenize.router, api_key.router)
# Paths served even while the engine is loading or the server is draining.
ALWAYS_OPEN = frozenset({"/health", "/ready", "/metrics"})
# Upload routes that enforce their own body limits while streaming in.
OWN_BODY_LIMIT = ("/v1/live/documents",)
# File uploads: limited here by the jobs config's max_upload_bytes (plus multipart framing), not
# the general JSON limit; the route checks the file part itself against max_upload_bytes.
FILE_UPLOADS = "/v1/files"
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


@dataclass
class ServerState:
    """Everything a request handler needs; lives on ``app.state.server``.

    ``engine`` and ``registry`` are None while the model loads in the background (``loader``):
    the server already answers /health, and 503 "not ready yet" everywhere else.
    """

    config: ServerConfig
    engine: Any  # engine.async_engine.AsyncEngine (duck-typed so the server never reaches inside)
    registry: ModelRegistry | None
    auth: Authenticator
    metrics: ServerMetrics | None = None
    draining: bool = False
    in_flight: int = 0
    manage_engine: bool = True
    loader: Callable[[], Any] | None = None  # builds the engine when serving starts before loading
    on_load_error: Callable[[BaseException], None] | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # feature services (jobs, live, ...)

    def __post_init__(self) -> None:
        if self.metrics is None:
            self.metrics = ServerMetrics(self._engine_stats)
        if self.engine is not None and self.registry is None:
            self.registry = _registry(self.config, self.engine)

    def _engine_stats(self) -> Any:
        return self.engine.stats() if self.engine is not None else None

    @classmethod
    def build(cls, config: ServerConfig, engine: Any, *, manage_engine: bool = True) -> ServerState:
        """State for an engine that is already loaded."""
        return cls(config=config, engine=engine, registry=None, auth=_auth(config), manage_engine=manage_engine)

    @classmethod
    def loading(cls, config: ServerConfig, loader: Callable[[], Any],
                on_load_error: Callable[[BaseException], None] | None = None) -> ServerState:
        """State whose engine ``loader()`` builds in a thread once the server is up."""
        return cls(config=config, engine=None, registry=None, auth=_auth(config), loader=loader,
                   on_load_error=on_load_error)

    def attach_engine(self, engine: Any) -> None:
        self.registry = _registry(self.config, engine)
        self.engine = engine

    @property
    def ready(self) -> bool:
        return self.engine is not None and bool(getattr(self.engine, "is_ready", False)) and not self.draining

    async def drain(self, timeout: float) -> bool:
        """Refuse new work, then wait for in-flight requests; True when all finished in time."""
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        return self.in_flight == 0


def _auth(config: ServerConfig) -> Authenticator:
    return Authenticator.from_config(config.api_key, config.api_key_file, config.rate_limit_rpm,
                                     config.rate_limit_tpm)


def _registry(config: ServerConfig, engine: Any) -> ModelRegistry:
    from grokd.weights.default_model import DEFAULT_MODEL_NAME

    name = config.served_model_name or default_served_name(config.model, DEFAULT_MODEL_NAME)
    return ModelRegistry.for_engine(engine.model_info, served_name=name, version=config.model_version,
                                    aliases=config.alias)


async def _load_in_background(state: ServerState) -> None:
    try:
        engine = await asyncio.to_thread(state.loader)  # type: ignore[arg-type]
        state.attach_engine(engine)
        engine.start()
        log.info("model loaded: serving %s", state.registry.default.id if state.registry else "?")
        runner = getattr(getattr(engine, "engine", None), "runner", None)
        if runner is not None:
            log.info("KV cache: %d blocks of %d tokens in %s (%.0f MiB, %d tokens)", runner.num_blocks,
                     runner.block_size, str(runner.kv_dtype).removeprefix("torch."),
                     runner.num_blocks * runner.bytes_per_block / 2**20, runner.num_blocks * runner.block_size)
    except BaseException as exc:  # noqa: BLE001 - reported to serve, which exits non-zero
        log.exception("loading the model failed")
        if state.on_load_error is not None:
            state.on_load_error(exc)
        if isinstance(exc, asyncio.CancelledError):
            raise


class _BodyTooLarge(Exception):
    pass


class ServerMiddleware:
    """Request id, body limit, readiness gate, last-resort 500, and request metrics."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        rid = given if _REQUEST_ID_OK.match(given) else f"req_{uuid.uuid4().hex[:24]}"
        scope.setdefault("state", {})["request_id"] = rid
        scope["state"]["arrival"] = time.monotonic()  # TTFT counts from here, tokenizing included
        started = False
        replied = False  # we answered 413 mid-body: whatever the app sends afterwards is dropped
        status = 500
        path = scope.get("path", "")
        limit, too_large = self._body_limit(path)
        received = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal started, status
            if replied:
                return
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        async def receive_wrapper() -> Message:
            nonlocal received, replied
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # answer now: frameworks turn errors raised while reading a body into a 400
                    if not started:
                        await reply(too_large)
                    replied = True
                    raise _BodyTooLarge()
            return message

        async def reply(err: APIError) -> None:
            body = json.dumps(err.body()).encode()
            hdrs = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            hdrs += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
            await send_wrapper({"type": "http.response.start", "status": err.status, "headers": hdrs})
            await send({"type": "http.response.body", "body": body})

        gated = path not in ALWAYS_OPEN
        if gated:
            self.state.in_flight += 1
        try:
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > limit:
                await reply(too_large)
            elif gated and not self.state.ready:
                why = "draining for shutdown" if self.state.draining else "not ready yet (model loading)"
                await reply(overloaded(f"The server is {why}; retry shortly.", self.state.config.retry_after_s))
            else:
                await self.app(scope, receive_wrapper, send_wrapper)
        except _BodyTooLarge:
            pass  # already answered 413
        except Exception:
            log.exception("unhandled error in %s %s (request %s)", scope.get("method"), path, rid)
            if not started:
                await reply(APIError(
                    500,
                    f"The server had an error while processing your request (request id {rid}). "
                    "Other requests are unaffected; retrying is safe.",
                    type="server_error",
                    code="internal_error",
                ))
        finally:
            if gated:
                self.state.in_flight -= 1
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"  # raw paths would be unbounded labels
            self.state.metrics.observe_request(label, scope.get("method", ""), status)


    def _body_limit(self, path: str) -> tuple[int, APIError]:
        """(most body bytes ``path`` may receive, the 413 to answer beyond it)."""
        if path.startswith(OWN_BODY_LIMIT):
            return 1 << 62, _too_large(1 << 62)
        jobs = self.state.extras.get("jobs")
        if path.startswith(FILE_UPLOADS) and jobs is not None:
            from grokd.server.jobs.files import MULTIPART_SLACK
            from grokd.server.jobs.files import too_large as file_too_large

            upload = jobs.config.max_upload_bytes
            return upload + MULTIPART_SLACK, file_too_large(upload)
        limit = self.state.config.max_body_bytes
        return limit, _too_large(limit)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


def _state_dir(state: ServerState) -> Path:
    """``--state-dir``, or a throw-away directory (said loudly) so the features still work."""
    if "state_dir" not in state.extras:
        state_dir = state.config.state_dir
        if not state_dir:
            state_dir = tempfile.mkdtemp(prefix="grokd-state-")
            log.warning("no --state-dir: files, batches, deferred results and the local live index live "
                        "in %s (not kept)", state_dir)
        state.extras["state_dir"] = Path(state_dir)
    return state.extras["state_dir"]


def _attach_jobs(app: FastAPI, state: ServerState) -> Any | None:
    """Files, batches and deferred completions (server.jobs) under the state dir; their
    requests run through this app in-process, so they get exactly the HTTP answer."""
    try:
        from grokd.server.jobs.service import attach_jobs
    except ImportError:
        return None
    return attach_jobs(app, state.config.jobs_config(_state_dir(state)),
                       model_exists=lambda name: state.registry is not None and state.registry.resolve(name) is not None)


def _attach_live(state: ServerState) -> Any | None:
    """Live context for chat (server.live) and its ingestion route; ``extras["live_config"]``
    comes from ``grokd serve``'s live flags, else the environment."""
    try:
        from grokd.server.live import LiveConfig, LiveContextService, build_router
    except ImportError:
        return None
    if "live" not in state.extras:
        config = state.extras.get("live_config") or LiveConfig.from_env(state_dir=_state_dir(state))
        state.extras["live"] = LiveContextService(config)
    return build_router(state.extras["live"])


def create_app(state: ServerState, *, enable_jobs: bool = True) -> FastAPI:
    """One app per ServerState; starts the engine loop on startup and stops it on shutdown
    when ``state.manage_engine`` (tests that share an engine set it False)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if state.engine is None and state.loader is not None:
            loading = asyncio.create_task(_load_in_background(state), name="grokd-load-model")
        elif state.manage_engine:
            state.engine.start()
        jobs = state.extras.get("jobs")
        if jobs is not None:
            await jobs.start()
        try:
            yield
        finally:
            if jobs is not None:
                await jobs.stop()
            if loading is not None and not loading.done():
                loading.cancel()
            if state.manage_engine and state.engine is not None:
                await asyncio.to_thread(state.engine.shutdown, state.config.drain_timeout_s)

    app = FastAPI(title="grokd", version=engine_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.server = state
    install_error_handlers(app)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    v1 = list(V1_ROUTERS)
    jobs = _attach_jobs(app, state) if enable_jobs else None
    if jobs is not None:
        state.extras["jobs"] = jobs
        v1 += jobs.routers()
    live_router = _attach_live(state)
    if live_router is not None:
        v1.append(live_router)
    for router in v1:
        app.include_router(router, dependencies=[Depends(require_api_key)])
    app.add_middleware(ServerMiddleware, state=state)
    return app
