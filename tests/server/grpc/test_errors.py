"""``server.grpc.errors``: API errors as the gRPC statuses xai-sdk understands."""

from __future__ import annotations

import grpc
import pytest

from grokd.server.errors import APIError, context_length_exceeded, overloaded, rate_limited
from grokd.server.grpc.errors import status_code, trailing_metadata


@pytest.mark.parametrize(("status", "code"), [
    (400, grpc.StatusCode.INVALID_ARGUMENT), (401, grpc.StatusCode.UNAUTHENTICATED),
    (403, grpc.StatusCode.PERMISSION_DENIED), (404, grpc.StatusCode.NOT_FOUND),
    (429, grpc.StatusCode.RESOURCE_EXHAUSTED), (499, grpc.StatusCode.CANCELLED),
    (503, grpc.StatusCode.UNAVAILABLE), (504, grpc.StatusCode.DEADLINE_EXCEEDED),
    (501, grpc.StatusCode.UNIMPLEMENTED), (418, grpc.StatusCode.INVALID_ARGUMENT),
    (500, grpc.StatusCode.INTERNAL), (502, grpc.StatusCode.INTERNAL),
])
def test_status_codes(status: int, code: grpc.StatusCode) -> None:
    assert status_code(APIError(status, "x")) == code


def test_param_code_and_retry_hint_travel_as_trailing_metadata() -> None:
    assert trailing_metadata(context_length_exceeded("too long", "messages")) == (
        ("x-grokd-error-param", "messages"), ("x-grokd-error-code", "context_length_exceeded"))
    assert ("retry-after-ms", "2000") in trailing_metadata(rate_limited("slow down", 2.0))
    assert status_code(overloaded("loading")) == grpc.StatusCode.UNAVAILABLE
