"""The generation service's bridge to live context (server.live): resolve ``search_parameters`` /
the ``live_search`` tool, search, and hand back a result to inject into the prompt; its failures
map to the API's error envelope (400 for bad parameters, 502/504 for a failed source in ``on``)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from grokd.engine.tokenizer import Tokenizer
from grokd.server.errors import APIError, from_value_error, not_supported
from grokd.server.generation.context import CallContext
from grokd.server.live import LiveContextError, LiveResult, SearchParameters, resolve
from grokd.server.protocol import Tool

# Completion tokens reserved when the request sets no max_tokens, so context never eats the reply.
DEFAULT_RESERVE = 512
# Opt-in per request (``x-grokd-debug: live``) so ordinary responses stay OpenAI-shaped.
DEBUG_HEADER = "x-grokd-debug"


def resolve_request(search_parameters: Any, tools: list[Tool] | None,
                    ) -> tuple[SearchParameters | None, list[Tool] | None]:
    """(live-search settings or None, the function tools left for the model)."""
    try:
        return resolve(search_parameters, tools)
    except ValueError as exc:
        raise from_value_error(exc, default_param="search_parameters") from None


async def augment(ctx: CallContext, params: SearchParameters, messages: list[dict[str, Any]],
                  tokenizer: Tokenizer, prompt_tokens: int, max_tokens: int | None,
                  max_model_len: int | None) -> LiveResult:
    """Run the search for the context to put into the prompt."""
    service = ctx.state.live
    if service is None:
        raise not_supported("search_parameters", "live search (`search_parameters`) on this server")
    reserve = max_tokens if max_tokens is not None else DEFAULT_RESERVE
    budget = service.token_budget(max_model_len or 1 << 30, prompt_tokens, reserve)
    try:
        return await service.augment(messages, params, tokenizer, budget)
    except LiveContextError as exc:
        raise APIError(exc.status, exc.message, type=exc.type, code=exc.code, param=exc.param,
                       headers=dict(exc.headers)) from None
    except ValueError as exc:
        raise from_value_error(exc, default_param="search_parameters") from None


def debug_fields(request: Request, live: LiveResult | None) -> dict[str, Any]:
    """``{"debug": {"live_context": ...}}`` (query, documents, the exact context block put into the
    prompt) when the request sent ``x-grokd-debug: live``; lets a client check what the model saw."""
    wanted = {part.strip().lower() for part in request.headers.get(DEBUG_HEADER, "").split(",")}
    if live is None or "live" not in wanted:
        return {}
    return {"debug": {"live_context": live.debug()}}
