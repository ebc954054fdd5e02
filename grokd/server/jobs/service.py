"""Wires store, batch runner and deferred completions together for the server's lifespan."""

from __future__ import annotations

from collections.abc import Callable

from grokd.server.jobs.config import Execute, JobsConfig
from grokd.server.jobs.deferred import DeferredService
from grokd.server.jobs.runner import BatchRunner
from grokd.server.jobs.store import JobStore
from grokd.server.jobs.validation import BodyValidator, ModelExists, protocol_body_validator


class JobsService:
    """Everything durable the server runs. Built once by ``server.app.create_app`` (which also
    mounts the jobs' routers); ``start``/``stop`` in the app's lifespan.

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

    async def start(self) -> None:
        """Resume unfinished batches and pending deferred requests; must run inside the loop."""
        self.runner.start()
        self.deferred.start()

    async def stop(self) -> None:
        await self.runner.stop()
        await self.deferred.stop()
        self.store.close()
