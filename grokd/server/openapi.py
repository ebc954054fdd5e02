"""The OpenAPI document, made true to what the server answers.

FastAPI documents each operation's 200 and, for anything with a body or parameters, a 422 it
never sends here: validation errors become 400s in the error envelope (``server.errors``). This
module rewrites that part once, from rules that mirror where each status comes from:

1. every operation can fail with 500 (an internal error, the envelope carrying the request id)
   and 408 (its request head or body did not arrive in time, ``server.http_limits``);
2. every operation outside ``ALWAYS_OPEN`` answers 503 while the model loads or the server
   drains (``app.ServerMiddleware``), and so does ``/ready`` itself;
3. every operation outside ``PUBLIC_PATHS`` answers 401 (no or a wrong key, when keys are
   configured), 403 (a blocked key, or one not allowed this route or model) and 429 (its key's
   rate limit, or a full queue);
4. an operation with a request body answers 400 (invalid JSON or values), 413 (too large) and
   415 (not declared JSON); one with parameters only, 400;
5. an operation with path parameters answers 404 (no such object, or not the caller's), and so
   does one with a body (it names a model, a file or a previous response);
6. the stores' routes (files, batches, deferred completions, live documents) answer 501 when the
   server runs without them.

Each of those responses has the envelope's schema (``ErrorResponse``), and the 422 goes. What
FastAPI cannot see is added from ``EXTRA``: the bodies the upload routes parse themselves, the
event streams of ``stream: true``, a file's raw content, the 202 of a pending deferred completion.
``LINKS`` adds the OpenAPI links from the operations that create objects to those that read them
(a file to its content and to a batch over it, a batch to its output file, a stored response to
reading and deleting it), so a client generator or a stateful tester can follow them.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from grokd.server.live.local import MAX_TEXT_CHARS


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every 4xx and 5xx body: ``{"error": {message, type, param, code}}``, OpenAI's envelope."""

    error: ErrorDetail


DESCRIPTIONS = {
    400: "Invalid request: malformed JSON, a value out of range, an unsupported parameter",
    401: "Missing or invalid API key (when keys are configured)",
    403: "This API key is blocked, or may not use this route or model",
    404: "No such object or model (objects of other keys included)",
    408: "The request head or body did not arrive in time",
    413: "Request body too large",
    415: "The body is not declared as JSON",
    429: "Rate limit of this key reached, or the queue is full; retry after Retry-After",
    500: "Internal error; the message carries the request id",
    501: "This server runs without the store this route needs",
    503: "Loading or draining; retry after Retry-After",
}
_REF = {"$ref": "#/components/schemas/ErrorResponse"}
_JOB_PREFIXES = ("/v1/files", "/v1/batches", "/v1/chat/deferred-completion", "/v1/live")
_EVENTS = {"text/event-stream": {"schema": {"type": "string"}}}
# A character that str.strip() keeps: JSON Schema's \s lacks \x1c-\x1f and \x85.
_VISIBLE = "[^\\s\\u001c-\\u001f\\u0085]"
_DOCUMENT = {  # server.live.local.validate_record
    "type": "object", "required": ["url", "text"], "additionalProperties": False,
    "properties": {"id": {"oneOf": [{"type": "string", "minLength": 1}, {"type": "integer"}]},
                   "url": {"type": "string", "format": "uri", "pattern": "^https?://[^/?#]"},
                   "text": {"type": "string", "pattern": _VISIBLE, "maxLength": MAX_TEXT_CHARS},
                   "title": {"type": ["string", "null"]}, "author": {"type": ["string", "null"]},
                   "source": {"type": ["string", "null"]},
                   "published_at": {"oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"},
                                              {"type": "null"}]}}}
# (method, path) -> what to merge into the operation
EXTRA: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/v1/chat/completions"): {"responses": {"200": {"content": _EVENTS}}},
    ("post", "/v1/completions"): {"responses": {"200": {"content": _EVENTS}}},
    ("post", "/v1/responses"): {"responses": {"200": {"content": _EVENTS}}},
    ("get", "/v1/files/{file_id}/content"): {
        "responses": {"200": {"content": {"application/octet-stream": {"schema": {"type": "string",
                                                                                 "format": "binary"}}}}}},
    ("get", "/v1/chat/deferred-completion/{request_id}"): {
        "responses": {"202": {"description": "Still running: ask again later (no body)"}}},
    ("post", "/v1/files"): {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "required": ["file", "purpose"],
        "properties": {"file": {"type": "string", "format": "binary"},
                       "purpose": {"type": "string", "enum": ["batch"]}}}}}}},
    ("post", "/v1/live/documents"): {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"oneOf": [
            {"type": "array", "items": _DOCUMENT, "minItems": 1},
            {"type": "object", "required": ["documents"],
             "properties": {"documents": {"type": "array", "items": _DOCUMENT, "minItems": 1}}}]}},
        "application/x-ndjson": {"schema": {"type": "string"}}}}},
}

_FILE_ID = {"file_id": "$response.body#/id"}
# (method, path) -> {link name: (target method, target path, parameters, request body)}
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, dict[str, str], dict[str, str] | None]]] = {
    ("post", "/v1/files"): {
        "GetFile": ("get", "/v1/files/{file_id}", _FILE_ID, None),
        "GetFileContent": ("get", "/v1/files/{file_id}/content", _FILE_ID, None),
        "DeleteFile": ("delete", "/v1/files/{file_id}", _FILE_ID, None),
        "CreateBatch": ("post", "/v1/batches", {}, {"input_file_id": "$response.body#/id",
                                                     "endpoint": "/v1/chat/completions",
                                                     "completion_window": "24h"}),
    },
    ("post", "/v1/batches"): {
        "GetBatch": ("get", "/v1/batches/{batch_id}", {"batch_id": "$response.body#/id"}, None),
        "CancelBatch": ("post", "/v1/batches/{batch_id}/cancel", {"batch_id": "$response.body#/id"}, None),
    },
    ("get", "/v1/batches/{batch_id}"): {
        "GetOutputFile": ("get", "/v1/files/{file_id}/content", {"file_id": "$response.body#/output_file_id"},
                          None),
    },
    ("post", "/v1/responses"): {
        "GetResponse": ("get", "/v1/responses/{response_id}", {"response_id": "$response.body#/id"}, None),
        "DeleteResponse": ("delete", "/v1/responses/{response_id}", {"response_id": "$response.body#/id"},
                           None),
    },
}


def _links(source: tuple[str, str], paths: dict[str, Any]) -> dict[str, Any]:
    """The 200 response's ``links`` of ``source``, each to a target this document has."""
    links: dict[str, Any] = {}
    for name, (method, path, parameters, body) in LINKS.get(source, {}).items():
        if method not in paths.get(path, {}):
            continue
        pointer = path.replace("~", "~0").replace("/", "~1")
        link: dict[str, Any] = {"operationRef": f"#/paths/{pointer}/{method}"}
        if parameters:
            link["parameters"] = parameters
        if body is not None:
            link["requestBody"] = body
        links[name] = link
    return links


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _statuses(path: str, op: dict[str, Any], always_open: Collection[str], public: Collection[str]) -> set[int]:
    statuses = {408, 500}
    if path not in always_open or path == "/ready":
        statuses.add(503)
    if path not in public:
        statuses |= {401, 403, 429}
    params = op.get("parameters", [])
    body = op.get("requestBody")
    if body is not None:
        statuses |= {400, 413, 415}
    elif params:
        statuses.add(400)
    if body is not None or any(p.get("in") == "path" for p in params):
        statuses.add(404)
    if path.startswith(_JOB_PREFIXES):
        statuses.add(501)
    return statuses


def document_errors(spec: dict[str, Any], always_open: Collection[str], public: Collection[str]) -> dict[str, Any]:
    """``spec`` with every operation's error statuses (the module's rules) and no 422."""
    components = spec.setdefault("components", {}).setdefault("schemas", {})
    schema = ErrorResponse.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components["ErrorResponse"] = schema
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for path, ops in spec.get("paths", {}).items():
        for method, op in ops.items():
            _merge(op, EXTRA.get((method, path), {}))
            links = _links((method, path), spec["paths"])
            if links:
                op.setdefault("responses", {}).setdefault("200", {"description": "OK"})["links"] = links
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for status in sorted(_statuses(path, op, always_open, public)):
                responses.setdefault(str(status), {"description": DESCRIPTIONS[status],
                                                   "content": {"application/json": {"schema": _REF}}})
    return spec


def install(app: FastAPI, always_open: Collection[str], public: Collection[str]) -> None:
    """Serve ``document_errors`` of FastAPI's own document at /openapi.json (built once)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            app.openapi_schema = document_errors(spec, always_open, public)
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010 - FastAPI's documented way to customise it
