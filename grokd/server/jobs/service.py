"""Wires store, batch runner and deferred completions together for the server's lifespan."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from grokd.server.jobs.config import Execute, JobsConfig
from grokd.server.jobs.deferred import DeferredService
from grokd.server.jobs.runner import BatchRunner
from grokd.server.jobs.store import JobStore
from grokd.server.jobs.validation import BodyValidator, ModelExists, protocol_body_validator


class JobsService:
    """Everything durable the server runs. Build once at startup; ``start``/``stop`` in lifespan.

    ``engine_load()`` (requests waiting or running in the engine) lets the runner tell when
    interactive traffic is present and hold batch lines to the low in-flight cap.
    ``execute(url, body, priority)`` must answer exactly as the HTTP route would (status code,
    JSON body); ``model_exists`` lets validation reject unknown models before a batch starts.
    """

    def __init__(
        self,
        config: JobsConfig,
        execute: Execute,
        model_exists: ModelExists | None = None,
        body_validator: BodyValidator | None = protocol_body_validator,
        engine_load: Callable[[], int] | None = None,
    ) -> None:
        self.config = config
        self.store = JobStore(config.state_dir, synchronous=config.sqlite_synchronous)
        interactive = None
        if engine_load is not None:
            def interactive() -> int:
                return max(0, engine_load() - self.runner.in_flight)
        self.runner = BatchRunner(self.store, execute, config, body_validator, model_exists,
                                  interactive_load=interactive)
        self.deferred = DeferredService(self.store, execute, config)

    @staticmethod
    def routers() -> list[APIRouter]:
        """The routers to mount; handlers find this service on ``app.state.jobs``."""
        from grokd.server.jobs import batches, deferred, files

        return [files.router, batches.router, deferred.router]

    async def start(self) -> None:
        """Resume unfinished batches and pending deferred requests; must run inside the loop."""
        self.runner.start()
        self.deferred.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.deferred.stop()
        self.store.close()


def _engine_load(engine: Any) -> Callable[[], int]:
    def load() -> int:
        stats = engine.stats()
        return int(stats.num_waiting) + int(stats.num_running)

    return load


def attach_jobs(app: Any, config: JobsConfig, model_exists: ModelExists | None = None) -> JobsService:
    """Build the service for ``app``: lines execute through the app itself (in-process ASGI)
    and handlers find the service on ``app.state.jobs``. Call ``start``/``stop`` in lifespan."""
    from grokd.server.jobs.asgi_execute import asgi_executor

    engine = getattr(getattr(app.state, "server", None), "engine", None)
    jobs = JobsService(config, asgi_executor(app), model_exists=model_exists,
                       engine_load=_engine_load(engine) if engine is not None else None)
    app.state.jobs = jobs
    return jobs


def with_jobs_lifespan(app: ASGIApp, jobs: JobsService) -> ASGIApp:
    """Wrap ``app`` so the jobs start after its own startup (engine running) and stop before its
    shutdown (engine still there for in-flight lines to be abandoned cleanly)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def receive_hook() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await jobs.stop()
            return message

        async def send_hook(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await jobs.start()
            await send(message)

        await app(scope, receive_hook, send_hook)

    return wrapped
