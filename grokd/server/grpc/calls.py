"""What every RPC goes through before and after its handler, as HTTP requests go through the
middleware and ``require_api_key``: the readiness gate (UNAVAILABLE while the model loads or the
server drains, so xai-sdk retries), the ``authorization: Bearer`` metadata checked by the same
:class:`Authenticator`, the key's endpoint ACL (each RPC is checked against the HTTP path it
corresponds to, :data:`HTTP_PATHS`), the per-key request budget, the in-flight count that a
drain waits for, request metrics, and API errors turned into gRPC statuses."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc

from grokd.server.errors import APIError, overloaded
from grokd.server.generation.context import CallContext
from grokd.server.grpc.errors import status_code, trailing_metadata
from grokd.server.state import ServerState

log = logging.getLogger("grokd.server")

# The HTTP path whose endpoint ACL (``endpoints=`` in the key file) covers each RPC.
HTTP_PATHS: dict[str, str] = {
    "/xai_api.Chat/GetCompletion": "/v1/chat/completions",
    "/xai_api.Chat/GetCompletionChunk": "/v1/chat/completions",
    "/xai_api.Chat/StartDeferredCompletion": "/v1/chat/completions",
    "/xai_api.Chat/GetDeferredCompletion": "/v1/chat/deferred-completion",
    "/xai_api.Chat/GetStoredCompletion": "/v1/responses",
    "/xai_api.Chat/DeleteStoredCompletion": "/v1/responses",
    "/xai_api.Models/ListLanguageModels": "/v1/language-models",
    "/xai_api.Models/GetLanguageModel": "/v1/language-models",
    "/xai_api.Models/ListEmbeddingModels": "/v1/language-models",
    "/xai_api.Models/ListImageGenerationModels": "/v1/language-models",
    "/xai_api.Models/GetEmbeddingModel": "/v1/language-models",
    "/xai_api.Models/GetImageGenerationModel": "/v1/language-models",
    "/xai_api.Tokenize/TokenizeText": "/v1/tokenize-text",
    "/xai_api.Auth/get_api_key_info": "/v1/api-key",
}
METRICS_METHOD = "GRPC"  # the ``method`` label of gRPC calls in grokd_http_requests_total


def metadata_value(context: Any, name: str) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == name:
            return str(value)
    return None


class CallGuard:
    """``async with guard(context, method) as ctx`` around every RPC handler."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def _admit(self, context: Any, method: str, arrival: float) -> CallContext:
        state = self.state
        if not state.ready:
            why = "draining for shutdown" if state.draining else "not ready yet (model loading)"
            raise overloaded(f"The server is {why}; retry shortly.", state.config.retry_after_s)
        key = state.auth.identify(metadata_value(context, "authorization"), metadata_value(context, "x-api-key"))
        path = HTTP_PATHS.get(method, method)
        if not key.allows_path(path):
            raise APIError(403, f"This API key may not use {path}.", type="permission_error",
                           code="endpoint_not_allowed")
        state.auth.check_request(key)

        async def disconnected() -> bool:
            return bool(context.cancelled())

        return CallContext(state, key, arrival=arrival, disconnected=disconnected)

    @asynccontextmanager
    async def __call__(self, context: Any, method: str) -> AsyncIterator[CallContext]:
        state = self.state
        arrival = time.monotonic()
        status = 200
        state.in_flight += 1
        try:
            yield self._admit(context, method, arrival)
        except APIError as err:
            status = err.status
            await context.abort(status_code(err), err.message, trailing_metadata(err))
        except asyncio.CancelledError:  # the client cancelled, or its deadline passed
            status = 499
            raise
        except grpc.aio.AbortError:
            raise
        except Exception:
            status = 500
            rid = f"req_{uuid.uuid4().hex[:24]}"
            log.exception("internal error in %s (request %s)", method, rid)
            await context.abort(grpc.StatusCode.INTERNAL,
                                f"The server had an error while processing your request (request id {rid}). "
                                "Other requests are unaffected; retrying is safe.")
        finally:
            state.in_flight -= 1
            state.metrics.observe_request(method, METRICS_METHOD, status)
