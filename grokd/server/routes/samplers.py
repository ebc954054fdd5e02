"""GET /v1/samplers: every logits processor the engine has registered (built-ins and entry-point
plugins), its parameters (name, type, range, default) and the default processor order, so a
client (the sampler lab page among them) can build its controls from the server instead of a
hard-coded list. ``processed_logprobs`` says that chat requests may ask for the distribution
after the sampler chain beside the raw one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from grokd.engine.logits_processors import DEFAULT_ORDER
from grokd.server.routes.deps import get_engine

router = APIRouter()


@router.get("/v1/samplers")
async def list_samplers(request: Request) -> dict[str, Any]:
    infos = get_engine(request).samplers()
    return {
        "object": "list",
        "default_order": list(DEFAULT_ORDER),
        "processed_logprobs": True,
        "data": [info.describe() for info in infos],
    }
