"""The FastAPI application: every router (the API, the jobs' files/batches/deferred routes, live
context ingestion), error handlers, the one lifespan (engine, then jobs), and one ASGI middleware
that gives every response an ``x-request-id``, enforces the body limit, refuses work while not
ready or draining, turns stray exceptions into a 500 envelope carrying the request id, and counts
requests for /metrics. What the handlers need is in ``server.state.ServerState``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grokd.engine.memory import resident_bytes
from grokd.server import openapi
from grokd.server.auth import require_api_key
from grokd.server.errors import APIError, install_error_handlers, overloaded
from grokd.server.http_limits import BODY_TIMED_OUT
from grokd.server.jobs import batches, deferred_completions, files
from grokd.server.jobs.asgi_execute import asgi_executor
from grokd.server.jobs.files import MULTIPART_SLACK
from grokd.server.jobs.files import too_large as file_too_large
from grokd.server.jobs.service import JobsService
from grokd.server.live import LiveConfig, LiveContextService, build_router
from grokd.server.registry import engine_version
from grokd.server.responses.store import ResponseStore
from grokd.server.routes import api_key, chat, completions, health, models, responses, samplers, tokenize, ui
from grokd.server.state import EngineLoader, ServerState

if TYPE_CHECKING:  # grpcio and xai-sdk are the optional `grpc` extra
    from grokd.server.grpc.server import GrpcServer

log = logging.getLogger("grokd.server")

# Health/metrics routes are public; the rest need a key (when keys are configured).
PUBLIC_ROUTERS = (health.router,)
# Every path served without a key: the health routers' and FastAPI's own OpenAPI document.
# "/" is the sampler lab page (with --ui): static files that hold no data and no key.
PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics", "/openapi.json", "/"})
V1_ROUTERS = (chat.router, completions.router, responses.router, models.router, tokenize.router, api_key.router,
              samplers.router)
# Files, batches and deferred completions; they answer 501 while the app has no JobsService.
JOBS_ROUTERS = (files.router, batches.router, deferred_completions.router)
# Paths served even while the engine is loading or the server is draining (the lab page and its
# assets too: it shows that the model is loading and retries).
ALWAYS_OPEN = frozenset({"/health", "/ready", "/metrics", "/"})
ALWAYS_OPEN_PREFIX = ui.ASSETS_PATH + "/"
# Upload routes that enforce their own body limits while streaming in.
OWN_BODY_LIMIT = ("/v1/live/documents",)
# File uploads: limited here by the jobs config's max_upload_bytes (plus multipart framing), not
# the general JSON limit; the route checks the file part itself against max_upload_bytes.
FILE_UPLOADS = "/v1/files"
# Seconds gRPC calls still running at shutdown (after the drain) get before they are cancelled.
GRPC_STOP_GRACE_S = 1.0
# the status a request is counted under when its client left before any answer (nginx's)
CLIENT_CLOSED = 499
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


async def _load_in_background(state: ServerState, loader: EngineLoader) -> None:
    try:
        engine = await asyncio.to_thread(loader)
        state.attach_engine(engine)
        engine.start()
        log.info("model loaded: serving %s", state.registry.default.id if state.registry else "?")
        kv = engine.kv_cache
        log.info("KV cache: %d blocks of %d tokens in %s (%.0f MiB reserved and resident, %d tokens); "
                 "weights %.0f MiB; process resident %.0f MiB", kv.num_blocks, kv.block_size, kv.dtype,
                 kv.num_bytes / 2**20, kv.num_tokens, engine.stats().weights_bytes / 2**20, resident_bytes() / 2**20)
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

        gated = path not in ALWAYS_OPEN and not path.startswith(ALWAYS_OPEN_PREFIX)
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
        except ClientDisconnect:
            if not started:  # the client left before any answer (or the body deadline passed: below)
                status = CLIENT_CLOSED
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
            if scope["state"].get(BODY_TIMED_OUT):
                # server.http_limits answered 408 itself; what the app sent after (FastAPI makes a
                # 400 of the disconnect it read the body into) never left the server
                status = 408
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"  # raw paths would be unbounded labels
            self.state.metrics.observe_request(label, scope.get("method", ""), status)


    def _body_limit(self, path: str) -> tuple[int, APIError]:
        """(most body bytes ``path`` may receive, the 413 to answer beyond it)."""
        if path.startswith(OWN_BODY_LIMIT):
            return 1 << 62, _too_large(1 << 62)
        jobs = self.state.jobs
        if path.startswith(FILE_UPLOADS) and jobs is not None:
            upload = jobs.config.max_upload_bytes
            return upload + MULTIPART_SLACK, file_too_large(upload)
        limit = self.state.config.max_body_bytes
        return limit, _too_large(limit)


def _too_large(limit: int) -> APIError:
    return APIError(413, f"Request body is larger than the limit of {limit} bytes.", code="request_too_large")


def _jobs(app: FastAPI, state: ServerState) -> JobsService:
    """Files, batches and deferred completions (server.jobs) under the state dir; their
    requests run through this app in-process, so they get exactly the HTTP answer."""
    return JobsService(state.config.jobs_config(state.state_dir), asgi_executor(app),
                       model_exists=state.model_exists, engine_load=state.engine_load)


def _live(state: ServerState) -> LiveContextService:
    """Live context for chat (server.live); ``state.live_config`` comes from ``grokd serve``'s live
    flags, else the environment."""
    return LiveContextService(state.live_config or LiveConfig.from_env(state_dir=state.state_dir))


async def _start_grpc(state: ServerState) -> GrpcServer | None:
    """xAI's gRPC API on ``--grpc-port`` (server.grpc, the ``grpc`` extra), in this event loop."""
    if state.config.grpc_port is None:
        return None
    from grokd.server.grpc.server import GrpcServer

    server = GrpcServer(state, state.config.host, state.config.grpc_port)
    await server.start()
    return server


def create_app(state: ServerState, *, enable_jobs: bool = True) -> FastAPI:
    """One app per ServerState, for serving and tests alike. Builds the feature services into
    ``state`` (``state.jobs`` only when ``enable_jobs``; a ``state.live`` given is kept) and mounts
    every router. The lifespan starts the engine loop (or loads the model in the background when
    ``state.loader`` is set), then the jobs; on shutdown it stops the jobs, then the engine
    (only when ``state.manage_engine``: tests that share an engine set it False)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = None
        if state.engine is None and state.loader is not None:
            loading = asyncio.create_task(_load_in_background(state, state.loader), name="grokd-load-model")
        elif state.manage_engine and state.engine is not None:
            state.engine.start()
        jobs = state.jobs
        if jobs is not None:
            await jobs.start()
        grpc_server = await _start_grpc(state)
        try:
            yield
        finally:
            if grpc_server is not None:  # drained already: what still runs is cancelled (engine abort)
                await grpc_server.stop(GRPC_STOP_GRACE_S)
            if jobs is not None:
                await jobs.stop()
            if loading is not None and not loading.done():
                loading.cancel()
            if state.manage_engine and state.engine is not None:
                await asyncio.to_thread(state.engine.shutdown, state.config.drain_timeout_s)

    app = FastAPI(title="grokd", version=engine_version(), lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.server = state
    if enable_jobs:
        state.jobs = _jobs(app, state)
    if state.live is None:
        state.live = _live(state)
    if state.responses is None:
        state.responses = ResponseStore(state.state_dir, state.config.responses_retention_s)
    install_error_handlers(app)
    for router in PUBLIC_ROUTERS:
        app.include_router(router)
    if state.config.ui:
        ui.mount(app)
    keyed = [Depends(require_api_key)]
    for router in (*V1_ROUTERS, *JOBS_ROUTERS):
        app.include_router(router, dependencies=keyed)
    app.include_router(build_router(state.live), dependencies=keyed)
    app.add_middleware(ServerMiddleware, state=state)
    openapi.install(app, ALWAYS_OPEN, PUBLIC_PATHS)
    return app
