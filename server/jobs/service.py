"""Wires store, batch runner and deferred completions together for the server's lifespan."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.jobs.config import Execute, JobsConfig
from server.jobs.deferred import DeferredService
from server.jobs.runner import BatchRunner
from server.jobs.store import JobStore
from server.jobs.validation import BodyValidator, ModelExists, protocol_body_validator


class JobsService:
    """Everything durable the server runs. Build once at startup; ``start``/``stop`` in lifespan.

    ``execute(url, body, priority)`` must answer exactly as the HTTP route would (status code,
    JSON body); ``model_exists`` lets validation reject unknown models before a batch starts.
    """

    def __init__(
        self,
        config: JobsConfig,
        execute: Execute,
        model_exists: ModelExists | None = None,
        body_validator: BodyValidator | None = protocol_body_validator,
    ) -> None:
        self.config = config
        self.store = JobStore(config.state_dir, synchronous=config.sqlite_synchronous)
        self.runner = BatchRunner(self.store, execute, config, body_validator, model_exists)
        self.deferred = DeferredService(self.store, execute, config)

    @staticmethod
    def routers() -> list[APIRouter]:
        """The routers to mount; handlers find this service on ``app.state.jobs``."""
        from server.jobs import batches, deferred, files

        return [files.router, batches.router, deferred.router]

    async def start(self) -> None:
        """Resume unfinished batches and pending deferred requests; must run inside the loop."""
        self.runner.start()
        self.deferred.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.deferred.stop()
        self.store.close()


def attach_jobs(app: Any, config: JobsConfig, model_exists: ModelExists | None = None) -> JobsService:
    """Build the service for ``app``: lines execute through the app itself (in-process ASGI)
    and handlers find the service on ``app.state.jobs``. Call ``start``/``stop`` in lifespan."""
    from server.jobs.asgi_execute import asgi_executor

    jobs = JobsService(config, asgi_executor(app), model_exists=model_exists)
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
