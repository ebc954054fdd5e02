"""Wires store, batch runner and deferred completions together for the server's lifespan."""

from __future__ import annotations

from fastapi import APIRouter

from server.jobs.batches import batches_router
from server.jobs.config import Execute, JobsConfig
from server.jobs.deferred import DeferredService, deferred_router
from server.jobs.files import files_router
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

    def routers(self) -> list[APIRouter]:
        return [
            files_router(self.store, self.config.max_upload_bytes),
            batches_router(self.store, self.runner, self.config),
            deferred_router(self.deferred),
        ]

    async def start(self) -> None:
        """Resume unfinished batches and pending deferred requests; must run inside the loop."""
        self.runner.start()
        self.deferred.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.deferred.stop()
        self.store.close()
