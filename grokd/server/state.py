"""What every request handler needs, in one typed object on ``app.state.server``.

The server talks to the engine only through :class:`EngineClient` (what it uses of
``grokd.engine.async_engine.AsyncEngine``, nothing deeper), and finds the feature services
(durable jobs, live context) in typed fields set once while the app is built.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from grokd.engine.async_engine import KVCacheInfo, ModelInfo
from grokd.engine.llm_engine import EngineStats
from grokd.engine.logits_processors import SamplerInfo
from grokd.engine.outputs import RequestOutput
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.tokenizer import Tokenizer
from grokd.server.auth import Authenticator
from grokd.server.config import ServerConfig
from grokd.server.jobs.service import JobsService
from grokd.server.live import LiveConfig, LiveContextService
from grokd.server.metrics import ServerMetrics
from grokd.server.registry import ModelRegistry, default_served_name
from grokd.server.responses.store import ResponseStore
from grokd.weights.default_model import DEFAULT_MODEL_NAME

log = logging.getLogger("grokd.server")


@runtime_checkable
class EngineClient(Protocol):
    """The engine as the server uses it; ``AsyncEngine`` is the implementation.

    ``generate`` checks the request before its first output (so admission errors become HTTP
    statuses before any byte is sent); closing the stream aborts the request.
    """

    @property
    def tokenizer(self) -> Tokenizer | None: ...

    @property
    def model_info(self) -> ModelInfo: ...

    @property
    def kv_cache(self) -> KVCacheInfo: ...

    @property
    def is_ready(self) -> bool: ...

    def start(self) -> None: ...

    def shutdown(self, timeout: float = 30.0) -> None: ...

    def generate(
        self,
        prompt_token_ids: list[int],
        params: SamplingParams,
        request_id: str | None = None,
        priority: int = 0,
    ) -> AsyncGenerator[RequestOutput, None]: ...

    def abort(self, request_id: str) -> None: ...

    def stats(self) -> EngineStats: ...

    def samplers(self) -> list[SamplerInfo]: ...


EngineLoader = Callable[[], EngineClient]


@dataclass
class ServerState:
    """The engine, its model registry, auth, metrics and the feature services.

    ``engine`` and ``registry`` are None while the model loads in the background (``loader``):
    the server already answers /health, and 503 "not ready yet" everywhere else.
    ``jobs``, ``live`` and ``responses`` (stored /v1/responses) are built by ``create_app`` unless given (``jobs`` stays None when the
    app is built without them); ``live_config`` configures ``live`` (default: the environment).
    ``state_dir`` is ``--state-dir``, or a throw-away directory (said loudly) so the features
    still work.
    """

    config: ServerConfig
    engine: EngineClient | None
    registry: ModelRegistry | None
    auth: Authenticator
    metrics: ServerMetrics = field(init=False)
    draining: bool = False
    in_flight: int = 0
    manage_engine: bool = True  # tests that share an engine between apps set it False
    loader: EngineLoader | None = None
    on_load_error: Callable[[BaseException], None] | None = None
    jobs: JobsService | None = None
    live: LiveContextService | None = None
    live_config: LiveConfig | None = None
    responses: ResponseStore | None = None
    state_dir: Path = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServerMetrics(self._engine_stats)
        self.state_dir = _state_dir(self.config)
        if self.engine is not None and self.registry is None:
            self.registry = _registry(self.config, self.engine)

    def _engine_stats(self) -> EngineStats | None:
        return self.engine.stats() if self.engine is not None else None

    def engine_load(self) -> int:
        """Requests waiting or running in the engine (0 while it loads)."""
        stats = self._engine_stats()
        return 0 if stats is None else stats.num_waiting + stats.num_running

    @classmethod
    def build(cls, config: ServerConfig, engine: EngineClient, *, manage_engine: bool = True) -> ServerState:
        """State for an engine that is already loaded."""
        return cls(config=config, engine=engine, registry=None, auth=_auth(config),
                   manage_engine=manage_engine)

    @classmethod
    def loading(cls, config: ServerConfig, loader: EngineLoader,
                on_load_error: Callable[[BaseException], None] | None = None) -> ServerState:
        """State whose engine ``loader()`` builds in a thread once the server is up."""
        return cls(config=config, engine=None, registry=None, auth=_auth(config), loader=loader,
                   on_load_error=on_load_error)

    def attach_engine(self, engine: EngineClient) -> None:
        self.registry = _registry(self.config, engine)
        self.engine = engine

    def model_exists(self, name: str) -> bool:
        return self.registry is not None and self.registry.resolve(name) is not None

    @property
    def ready(self) -> bool:
        return self.engine is not None and self.engine.is_ready and not self.draining

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


def _registry(config: ServerConfig, engine: EngineClient) -> ModelRegistry:
    name = config.served_model_name or default_served_name(config.model, DEFAULT_MODEL_NAME)
    return ModelRegistry.for_engine(engine.model_info, served_name=name, version=config.model_version,
                                    aliases=config.alias)


def _state_dir(config: ServerConfig) -> Path:
    if config.state_dir:
        return Path(config.state_dir)
    state_dir = tempfile.mkdtemp(prefix="grokd-state-")
    log.warning("no --state-dir: files, batches, deferred results and the local live index live "
                "in %s (not kept)", state_dir)
    return Path(state_dir)
