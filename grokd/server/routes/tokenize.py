"""POST /v1/tokenize-text: the served model's own tokenizer, so counts match usage."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from grokd.server.errors import invalid_request
from grokd.server.protocol import TokenInfo, TokenizeTextRequest, TokenizeTextResponse
from grokd.server.routes.deps import get_engine, require_json, resolve_model
from grokd.server.routes.generation import token_text

router = APIRouter()


@router.post("/v1/tokenize-text", dependencies=[Depends(require_json)])
async def tokenize_text(req: TokenizeTextRequest, request: Request) -> TokenizeTextResponse:
    model = resolve_model(request, req.model)
    tokenizer = get_engine(request).tokenizer
    if tokenizer is None:
        raise invalid_request(f"Model `{model.id}` has no tokenizer.", param="model", code="no_tokenizer")
    infos = []
    for tid in tokenizer.encode(req.text):
        text, raw = token_text(tokenizer, tid)
        infos.append(TokenInfo(token_id=tid, string_token=text, token_bytes=raw))
    return TokenizeTextResponse(token_ids=infos)
