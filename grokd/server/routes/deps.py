"""Dependencies shared by the routers: the server state, JSON-only bodies, model resolution."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

from grokd.server.errors import APIError, model_not_found

if TYPE_CHECKING:
    from grokd.server.app import ServerState
    from grokd.server.registry import ServedModel


def get_state(request: Request) -> ServerState:
    return request.app.state.server


async def require_json(request: Request) -> None:
    """415 for a body that is not declared as JSON (FastAPI would otherwise call it a 422)."""
    ctype = request.headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main != "application/json" and not main.endswith("+json"):
        raise APIError(
            415,
            f"Unsupported Content-Type {ctype or '(none)'!r}: send the body as application/json.",
            code="unsupported_media_type",
        )


def resolve_model(request: Request, name: str) -> ServedModel:
    """Alias → served model; 404 if unknown, 403 if the calling key may not use it."""
    state = get_state(request)
    model = state.registry.resolve(name)
    if model is None:
        raise model_not_found(name)
    key = getattr(request.state, "api_key", None)
    if key is not None and not key.allows_model(model.id):
        raise APIError(403, f"This API key is not allowed to use the model `{model.id}`.",
                       type="permission_error", code="model_not_allowed", param="model")
    return model
