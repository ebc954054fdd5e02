"""OpenAI's error envelope and the exception handlers that produce it.

Every error leaves the server as ``{"error": {"message", "type", "param", "code"}}`` so that
openai-python fills ``err.type`` / ``err.code`` / ``err.param`` and picks the right exception
class from the status. Retry headers on 429/503 steer its retry loop (see API.md).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from grokd.engine.errors import ContextLengthError, EngineDeadError, QueueFullError

log = logging.getLogger("grokd.server")

INVALID_REQUEST = "invalid_request_error"


class APIError(Exception):
    """An error meant for the client, already classified (status, type, code, param)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = INVALID_REQUEST,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def retry_headers(seconds: float) -> dict[str, str]:
    """Headers that make openai-python wait exactly ``seconds`` and retry."""
    seconds = max(seconds, 0.001)
    return {
        "Retry-After": str(max(1, round(seconds))),
        "retry-after-ms": str(max(1, round(seconds * 1000))),
        "x-should-retry": "true",
    }


def invalid_request(message: str, param: str | None = None, code: str | None = "invalid_value") -> APIError:
    return APIError(400, message, param=param, code=code)


def not_configured(message: str, code: str) -> APIError:
    """501 for a feature this server was started without (a configuration, not a passing state):
    ``x-should-retry: false``, since openai-python otherwise retries every status >= 500."""
    return APIError(501, message, type="server_error", code=code, headers={"x-should-retry": "false"})


def not_supported(param: str, what: str | None = None) -> APIError:
    """A field we parse but do not implement yet: reject rather than silently ignore it."""
    return invalid_request(f"{what or param} is not supported yet", param=param, code="unsupported_parameter")


def from_value_error(exc: ValueError, default_param: str | None = None) -> APIError:
    """Map ``ValueError("field: problem")`` (SamplingParams.validate's convention) to a 400."""
    text = str(exc)
    field, sep, _ = text.partition(":")
    param = field.strip() if sep and field and " " not in field.strip() else default_param
    return invalid_request(text, param=param)


def model_not_found(model: str) -> APIError:
    return APIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        type="not_found_error",
        code="model_not_found",
        param="model",
    )


def rate_limited(message: str, retry_after: float) -> APIError:
    return APIError(
        429, message, type="rate_limit_error", code="rate_limit_exceeded", headers=retry_headers(retry_after)
    )


def overloaded(message: str, retry_after: float = 1.0) -> APIError:
    return APIError(503, message, type="server_error", code="overloaded", headers=retry_headers(retry_after))


def context_length_exceeded(message: str, param: str) -> APIError:
    return invalid_request(message, param=param, code="context_length_exceeded")


def engine_error(exc: Exception, *, param: str, retry_after: float) -> APIError:
    """Classify an exception raised by ``AsyncEngine.generate`` before it yielded anything."""
    if isinstance(exc, QueueFullError):
        return rate_limited(f"The server's request queue is full: {exc}".rstrip(": "), retry_after)
    if isinstance(exc, ContextLengthError):
        return context_length_exceeded(str(exc), param)
    if isinstance(exc, EngineDeadError):
        return overloaded(f"The engine is not running: {exc}".rstrip(": "), retry_after)
    if isinstance(exc, ValueError):
        return from_value_error(exc, default_param=param)
    raise exc


def _param_from_loc(loc: tuple[int | str, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # pydantic names union members ("function-after[...]", "str", "list[...]"): not field names.
    parts = [p for p in parts if not any(c in p for c in "[]()")]
    if not parts:
        return None
    out = parts[0]
    for p in parts[1:]:
        out += f"[{p}]" if p.isdigit() else f".{p}"
    return out


def _validation_message(err: dict[str, Any], param: str | None) -> str:
    if err.get("type") == "json_invalid":
        return f"Invalid JSON body: {err.get('ctx', {}).get('error', err.get('msg'))}"
    if err.get("type") == "missing":
        return f"{param}: field required"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return f"{param}: {msg}" if param and not msg.startswith(f"{param}:") else msg


def validation_error(exc: RequestValidationError) -> APIError:
    errors = list(exc.errors())
    if not errors:
        return invalid_request("Invalid request body")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return invalid_request(_validation_message(first, None), code="invalid_json")
    if first.get("loc") in (("body",), ()) and first.get("type") in ("missing", "model_attributes_type", "dict_type"):
        return invalid_request("The request body must be a JSON object", code="invalid_json")
    param = _param_from_loc(tuple(first.get("loc", ())))
    return invalid_request(_validation_message(first, param), param=param)


def request_id_of(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", ""))


async def _api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()


async def _validation_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return validation_error(exc).response()


async def _http_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    headers = dict(exc.headers or {})
    if status == 404:
        err = APIError(404, f"Unknown route: {request.method} {request.url.path}", type="not_found_error",
                       code="unknown_url")
    elif status == 405:
        err = APIError(405, f"Method {request.method} is not allowed for {request.url.path}",
                       code="method_not_allowed")
        headers["Allow"] = ", ".join(_allowed_methods(request))
    elif status >= 500:
        err = APIError(status, str(exc.detail), type="server_error")
    elif status == 400 and (why := _body_parse_failure(exc.__cause__)) is not None:
        err = APIError(400, why, code="invalid_json")
    else:
        err = APIError(status, str(exc.detail))
    err.headers.update(headers)
    return err.response()


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's 405 names only the first route's:
    grokd has one route per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _body_parse_failure(cause: BaseException | None) -> str | None:
    """What FastAPI's generic "error parsing the body" was, for the two a client can fix."""
    if isinstance(cause, RecursionError):
        return "Invalid JSON body: nested too deeply (about 1,000 levels of arrays and objects at most)."
    if isinstance(cause, UnicodeDecodeError):
        return f"Invalid JSON body: not valid UTF-8 (byte {cause.start}: {cause.reason}); send JSON as UTF-8."
    return None


async def _unhandled_handler(request: Request, exc: Exception) -> JSONResponse:
    rid = request_id_of(request)
    log.exception("internal error in %s %s (request %s)", request.method, request.url.path, rid)
    return APIError(
        500,
        f"The server had an error while processing your request (request id {rid}). "
        "Other requests are unaffected; retrying is safe.",
        type="server_error",
        code="internal_error",
    ).response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, _api_error_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(Exception, _unhandled_handler)
