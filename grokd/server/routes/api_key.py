"""GET /v1/api-key: what the calling key is (redacted), as xAI describes it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from grokd.server.auth import ANONYMOUS, describe
from grokd.server.protocol import ApiKeyInfo

router = APIRouter()


@router.get("/v1/api-key")
async def get_api_key(request: Request) -> ApiKeyInfo:
    return ApiKeyInfo.model_validate(describe(getattr(request.state, "api_key", ANONYMOUS)))
