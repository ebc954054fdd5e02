"""GET /health (process alive), GET /ready (model loaded, engine stepping, not draining),
GET /metrics (Prometheus text). None of them needs an API key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from grokd.server.errors import overloaded
from grokd.server.metrics import CONTENT_TYPE
from grokd.server.routes.deps import get_registry, get_state

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=None)
async def ready(request: Request) -> JSONResponse | dict[str, str]:
    state = get_state(request)
    if not state.ready:
        why = "draining" if state.draining else "loading"
        return overloaded(f"The server is not ready ({why}).", state.config.retry_after_s).response()
    return {"status": "ready", "model": get_registry(request).default.id}


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                             "description": "Prometheus text exposition format"}})
async def metrics(request: Request) -> Response:
    return Response(get_state(request).metrics.render(), media_type=CONTENT_TYPE)
