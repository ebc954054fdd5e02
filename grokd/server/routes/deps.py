"""Dependencies shared by the routers: the server state and its loaded engine, JSON-only
bodies, model resolution."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from fastapi import Request

from grokd.server.errors import APIError
from grokd.server.generation.context import CallContext, not_ready, resolve_for_key
from grokd.server.unicode_check import invalid_text_path, utf8_error

if TYPE_CHECKING:
    from grokd.server.registry import ModelRegistry, ServedModel
    from grokd.server.state import EngineClient, ServerState


def get_state(request: Request) -> ServerState:
    return request.app.state.server


def get_engine(request: Request) -> EngineClient:
    """The loaded engine (the middleware already answers 503 to API requests while it loads)."""
    state = get_state(request)
    if state.engine is None:
        raise _not_ready(state)
    return state.engine


def get_registry(request: Request) -> ModelRegistry:
    """The served models, there once the engine is loaded."""
    state = get_state(request)
    if state.registry is None:
        raise _not_ready(state)
    return state.registry


def _not_ready(state: ServerState) -> APIError:
    return not_ready(state)


def context_of(request: Request) -> CallContext:
    """The generation service's view of an HTTP request: the key ``require_api_key`` identified,
    the priority the job runner set in the scope, the middleware's arrival time, and the client's
    disconnect check."""
    return CallContext(
        state=get_state(request),
        key=getattr(request.state, "api_key", None),
        priority=int(getattr(request.state, "priority", 0)),
        arrival=getattr(request.state, "arrival", None) or time.monotonic(),
        disconnected=request.is_disconnected,
    )


async def require_json(request: Request) -> None:
    """415 for a body that is not declared as JSON (FastAPI would otherwise call it a 422); 400
    for a body that is not UTF-8 or holds a string that is not Unicode text or holds NUL
    (``server.unicode_check``). Malformed
    JSON is left to FastAPI's own validation error."""
    ctype = request.headers.get("content-type", "")
    main = ctype.split(";", 1)[0].strip().lower()
    if main != "application/json" and not main.endswith("+json"):
        raise APIError(
            415,
            f"Unsupported Content-Type {ctype or '(none)'!r}: send the body as application/json.",
            code="unsupported_media_type",
        )
    raw = await request.body()
    bad_bytes = utf8_error(raw)
    if bad_bytes is not None:
        raise APIError(400, f"{bad_bytes}: send JSON as UTF-8", code="invalid_encoding")
    if b"\\u" not in raw:  # a lone surrogate or a NUL can only be spelled as an escape
        return
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        return
    found = invalid_text_path(body)
    if found is not None:
        path, problem = found
        raise APIError(400, f"{path}: {problem}", param=path, code="invalid_value")


def resolve_model(request: Request, name: str) -> ServedModel:
    """Alias → served model; 404 if unknown, 403 if the calling key may not use it."""
    return resolve_for_key(get_registry(request), getattr(request.state, "api_key", None), name)
