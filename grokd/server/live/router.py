"""``POST /v1/live/documents``: push posts/articles into the local firehose index.

Body: JSONL (one object per line; any content type but JSON arrays) or a JSON array of objects,
or ``{"documents": [...]}``. Each object: ``{id?, url, title?, text, author?, published_at?,
source?}``; ``published_at`` is ISO 8601 (naive = UTC) or epoch seconds; ``id`` defaults to the
URL and re-sending an id updates the document. Validation is all-or-nothing: any bad line is a
400 whose message names every bad line (``line 3: url must be ...``) and nothing is stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from fastapi import APIRouter, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse

from grokd.server.errors import not_configured

from .local import IngestError, IngestRecord, parse_jsonl, parse_list
from .service import LiveContextService

MAX_BODY_BYTES = 16 * 1024 * 1024


def _error(status: int, message: str, code: str, param: str | None = "body") -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status
    )


async def _read_capped(request: Request, limit: int) -> bytes | None:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            return None
    return bytes(body)


def build_router(
    service: LiveContextService, *, dependencies: Sequence[Depends] = (), max_body_bytes: int = MAX_BODY_BYTES
) -> APIRouter:
    """The live-context routes bound to ``service``; pass the server's auth dependency in
    ``dependencies`` so ingestion needs an API key like every other /v1 route."""
    router = APIRouter(dependencies=list(dependencies), tags=["live"])

    @router.post("/v1/live/documents")
    async def ingest_documents(request: Request) -> JSONResponse:
        if service.local is None:
            return not_configured("the local live index is disabled: start grokd with --state-dir",
                                  "live_local_disabled").response()
        raw = await _read_capped(request, max_body_bytes)
        if raw is None:
            return _error(413, f"body exceeds {max_body_bytes} bytes", "body_too_large")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            return _error(400, "body is not UTF-8", "invalid_value")
        stripped = text.lstrip()
        try:
            records = _parse(stripped)
        except IngestError as exc:
            return _error(400, f"invalid documents, nothing stored: {exc}", "invalid_value")
        except ValueError as exc:
            return _error(400, str(exc), "invalid_value")
        if not records:
            return _error(400, "no documents in body", "invalid_value")
        counts = await service.local.ingest(records)
        return JSONResponse({"object": "live.documents.ingest", **counts})

    return router


def _parse(text: str) -> list[IngestRecord]:
    if text.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"body is not a valid JSON array ({exc.msg} at line {exc.lineno})") from None
        return parse_list(items)
    if text.startswith("{"):
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and isinstance(whole.get("documents"), list):
            return parse_list(whole["documents"])
    return parse_jsonl(text)
