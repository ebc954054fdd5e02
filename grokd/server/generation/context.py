"""What the generation service needs to know about one call, whatever protocol it came in on.

A front end builds a :class:`CallContext` once per request: the HTTP routes from the starlette
request (``routes.deps.context_of``: the key ``require_api_key`` identified, the priority and
arrival time the middleware or the job runner put into the scope, the client's disconnect
check), the gRPC servicers from the call's metadata. The service then reads the engine, the
registry, the tenant and the key's token budget from here and never sees a wire object.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from grokd.server.auth import ANONYMOUS, ApiKey
from grokd.server.errors import APIError, model_not_found, overloaded
from grokd.server.jobs.tenancy import Tenant

if TYPE_CHECKING:
    from grokd.server.registry import ModelRegistry, ServedModel
    from grokd.server.state import EngineClient, ServerState


async def _never_disconnected() -> bool:
    return False


@dataclass
class CallContext:
    """One call: the server state, the calling key (None: not authenticated by this front end,
    e.g. a bare test app), its engine priority, when it arrived (TTFT counts from here) and how
    to tell that the client went away."""

    state: ServerState
    key: ApiKey | None = None
    priority: int = 0
    arrival: float = field(default_factory=time.monotonic)
    disconnected: Callable[[], Awaitable[bool]] = _never_disconnected

    async def is_disconnected(self) -> bool:
        return await self.disconnected()

    @property
    def engine(self) -> EngineClient:
        """The loaded engine (503 "not ready" while it loads)."""
        if self.state.engine is None:
            raise not_ready(self.state)
        return self.state.engine

    @property
    def registry(self) -> ModelRegistry:
        if self.state.registry is None:
            raise not_ready(self.state)
        return self.state.registry

    @property
    def tenant(self) -> Tenant:
        """Who owns what this call stores (``jobs.tenancy``)."""
        key = self.key or ANONYMOUS
        return Tenant(key.key_id, key.admin)

    def charge(self, tokens: int) -> None:
        """Tokens used, against the key's tokens-per-minute budget."""
        if self.key is not None:
            self.state.auth.charge_tokens(self.key, tokens)

    def visible_models(self) -> list[ServedModel]:
        return [m for m in self.registry.models if self.key is None or self.key.allows_model(m.id)]

    def resolve_model(self, name: str) -> ServedModel:
        """Alias → served model; 404 if unknown, 403 if the calling key may not use it."""
        return resolve_for_key(self.registry, self.key, name)


def resolve_for_key(registry: ModelRegistry, key: ApiKey | None, name: str) -> ServedModel:
    model = registry.resolve(name)
    if model is None:
        raise model_not_found(name)
    if key is not None and not key.allows_model(model.id):
        raise APIError(403, f"This API key is not allowed to use the model `{model.id}`.",
                       type="permission_error", code="model_not_allowed", param="model")
    return model


def not_ready(state: ServerState) -> APIError:
    return overloaded("The server is not ready yet (model loading); retry shortly.",
                      state.config.retry_after_s)
