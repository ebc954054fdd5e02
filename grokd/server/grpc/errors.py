"""API errors as gRPC statuses. The HTTP status of an :class:`APIError` picks the code (the
mapping gRPC documents for HTTP, with grokd's own 499 as CANCELLED); the message is the HTTP
error's message unchanged, and ``param``/``code`` travel as trailing metadata
(``x-grokd-error-param``, ``x-grokd-error-code``) and retry hints as ``retry-after-ms``.

UNAVAILABLE is what xai-sdk's channel retries (not ready, draining, the engine down), so only
503 maps to it."""

from __future__ import annotations

import grpc

from grokd.server.errors import APIError

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ALREADY_EXISTS,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code(err: APIError) -> grpc.StatusCode:
    """The gRPC code for an API error; any other 4xx is INVALID_ARGUMENT, any other 5xx INTERNAL."""
    code = STATUS_CODES.get(err.status)
    if code is not None:
        return code
    return grpc.StatusCode.INVALID_ARGUMENT if err.status < 500 else grpc.StatusCode.INTERNAL


def trailing_metadata(err: APIError) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if err.param:
        out.append(("x-grokd-error-param", err.param))
    if err.code:
        out.append(("x-grokd-error-code", err.code))
    retry_ms = err.headers.get("retry-after-ms")
    if retry_ms:
        out.append(("retry-after-ms", retry_ms))
    return tuple(out)
