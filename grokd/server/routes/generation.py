"""The engine-call layer every generating endpoint shares (the generation service and
completions sit on it): sampling settings → SamplingParams, the context-window check, starting
an engine request (errors mapped before anything is sent), collecting a whole result while
watching for a disconnected client, and token text/bytes for logprobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from grokd.engine.outputs import RequestOutput, TokenLogprob
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.tokenizer import Tokenizer
from grokd.server.errors import (
    APIError,
    context_length_exceeded,
    engine_error,
    from_value_error,
    not_supported,
)
from grokd.server.generation.context import CallContext
from grokd.server.generation.types import SamplingSettings
from grokd.server.metrics import TokenTimer
from grokd.server.protocol import (
    ENGINE_FIELDS,
    IGNORED_FIELDS,
    UNSUPPORTED_FIELDS,
    _SamplerFields,
    _SamplingRequest,
)

if TYPE_CHECKING:
    from grokd.server.state import EngineClient

DISCONNECT_POLL_S = 0.25


def reject_unsupported(req: _SamplingRequest) -> None:
    """400 for semantics-changing fields grokd does not implement (never silently ignore them)."""
    for name, value in req.extra_fields().items():
        if name in UNSUPPORTED_FIELDS and value not in (None, False, [], {}, ""):
            raise not_supported(name, UNSUPPORTED_FIELDS[name])
    if req.best_of is not None and req.best_of != req.n:
        raise not_supported("best_of", "`best_of` different from `n`")
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options: only allowed when stream is true", param="stream_options",
                       code="invalid_value")


def sampler_extras(req: _SamplerFields, ignored: frozenset[str] = IGNORED_FIELDS) -> dict[str, Any]:
    """Unknown body fields are parameters of registered samplers (the engine ignores the rest)."""
    return {
        k: v for k, v in req.extra_fields().items()
        if k not in UNSUPPORTED_FIELDS and k not in ignored
    }


def settings_of(req: _SamplerFields, *, n: int = 1, stop: list[str] | None = None,
                ignored: frozenset[str] = IGNORED_FIELDS) -> SamplingSettings:
    """The sampling knobs of any generating request body."""
    return SamplingSettings(
        n=n,
        temperature=req.temperature,
        top_p=req.top_p,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        logit_bias=req.logit_bias,
        stop=list(stop or []),
        seed=req.seed,
        engine_fields={name: getattr(req, name) for name in ENGINE_FIELDS if getattr(req, name, None) is not None},
        sampler_extras=sampler_extras(req, ignored),
    )


def request_settings(req: _SamplingRequest) -> SamplingSettings:
    """Chat's and completions' knobs (``n`` and ``stop`` included)."""
    return settings_of(req, n=req.n, stop=req.stop_list())


def build_params(
    settings: SamplingSettings,
    *,
    max_tokens: int,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
) -> SamplingParams:
    bias: dict[int, float] = {}
    for k, v in (settings.logit_bias or {}).items():
        try:
            bias[int(k)] = float(v)
        except ValueError:
            raise APIError(400, f"logit_bias: keys must be token ids, got {k!r}", param="logit_bias",
                           code="invalid_value") from None
    params = SamplingParams(
        n=settings.n,
        max_tokens=max_tokens,
        temperature=1.0 if settings.temperature is None else settings.temperature,
        top_p=1.0 if settings.top_p is None else settings.top_p,
        frequency_penalty=settings.frequency_penalty or 0.0,
        presence_penalty=settings.presence_penalty or 0.0,
        logit_bias=bias,
        stop=list(settings.stop),
        seed=settings.seed,
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        extra=dict(settings.sampler_extras),
    )
    for name, value in settings.engine_fields.items():
        setattr(params, name, list(value) if isinstance(value, list) else value)
    try:
        params.validate()
    except ValueError as exc:
        raise from_value_error(exc) from None
    return params


def resolve_max_tokens(requested: int | None, prompt_len: int, max_model_len: int | None,
                       *, param: str, what: str) -> int:
    """Context-window check before queueing; the default is whatever room is left."""
    if max_model_len is None:
        return requested if requested is not None else 16
    if prompt_len >= max_model_len:
        raise context_length_exceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, your {what} "
            f"resulted in {prompt_len} tokens, leaving no room for a completion. Please reduce the "
            f"length of the {what}.",
            param,
        )
    if requested is None:
        return max_model_len - prompt_len
    if prompt_len + requested > max_model_len:
        raise context_length_exceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_len + requested} tokens ({prompt_len} in the {what}, {requested} in the "
            f"completion). Please reduce the length of the {what} or the completion.",
            param,
        )
    return requested


@dataclass
class EngineCall:
    """One engine request: its first output (already received) and the rest of the stream."""

    request_id: str
    first: RequestOutput | None
    rest: AsyncGenerator[RequestOutput, None]
    engine: EngineClient
    timer: TokenTimer
    prompt_tokens: int
    completion_tokens: int = 0
    cached_tokens: int = 0
    finished: bool = False

    async def __aiter__(self) -> AsyncIterator[RequestOutput]:
        if self.first is not None:
            first, self.first = self.first, None
            yield self._seen(first)
        async for out in self.rest:
            yield self._seen(out)

    def _seen(self, out: RequestOutput) -> RequestOutput:
        now = time.monotonic()
        new = sum(len(o.delta_token_ids) for o in out.outputs)
        self.completion_tokens += new
        self.timer.tokens(new, now)
        self.cached_tokens = max(self.cached_tokens, out.num_cached_tokens)
        if out.finished and not self.finished:
            self.finished = True
            self.timer.done(now, len(out.prompt_token_ids), self.completion_tokens, self.cached_tokens, out.outputs)
        return out

    async def close(self) -> None:
        """Abort (if still running) and close the engine stream; safe under cancellation."""
        if not self.finished:
            with contextlib.suppress(Exception):
                self.engine.abort(self.request_id)
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(Exception):
                await self.rest.aclose()


async def start(ctx: CallContext, prompt_ids: list[int], params: SamplingParams, request_id: str,
                *, param: str) -> EngineCall:
    """Submit to the engine at the call's priority and wait for its first output, so that
    admission errors (queue full, context, bad value) become API errors before any byte is sent."""
    state = ctx.state
    engine = ctx.engine
    priority = ctx.priority
    timer = TokenTimer(state.metrics, ctx.arrival)
    stream = engine.generate(prompt_ids, params, request_id=request_id, priority=priority)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    except Exception as exc:
        with contextlib.suppress(Exception):
            await stream.aclose()
        raise engine_error(exc, param=param, retry_after=state.config.retry_after_s) from exc
    return EngineCall(request_id, first, stream, engine, timer, len(prompt_ids))


async def collect(ctx: CallContext, calls: list[EngineCall]) -> list[RequestOutput]:
    """Run the calls to completion; a client that goes away aborts them all at once."""

    async def run(call: EngineCall) -> RequestOutput:
        last = None
        try:
            async for out in call:
                last = out
        finally:
            await call.close()
        if last is None:
            raise APIError(500, "The engine returned no output", type="server_error")
        return last

    async def watch() -> None:
        while not await ctx.is_disconnected():
            await asyncio.sleep(DISCONNECT_POLL_S)

    work = asyncio.ensure_future(asyncio.gather(*(run(c) for c in calls)))
    # Once cancelled (client gone, or the batch runner aborting a line) nobody awaits ``work``,
    # and the gather ends with CancelledError or a call's error: retrieve it, or asyncio logs
    # "_GatheringFuture exception was never retrieved".
    work.add_done_callback(_retrieve)
    watcher = asyncio.ensure_future(watch())
    try:
        racers: set[asyncio.Future[Any]] = {work, watcher}
        await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            for c in calls:
                await c.close()
            raise APIError(499, "Client closed the request", code="client_disconnected")
        return work.result()
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()


def _retrieve(fut: asyncio.Future) -> None:
    if not fut.cancelled():
        fut.exception()


def engine_failure(out: RequestOutput, request_id: str) -> APIError:
    if out.fatal:  # the engine is gone (e.g. a tensor-parallel rank died): the server is unavailable
        return APIError(503, f"The engine stopped while generating (request id {request_id}): {out.error}",
                        type="server_error", code="engine_unavailable")
    return APIError(500, f"The engine failed while generating (request id {request_id}): {out.error}",
                    type="server_error", code="engine_error")


def token_text(tokenizer: Tokenizer | None, token_id: int, as_ids: bool = False) -> tuple[str, list[int]]:
    """(text, utf-8 bytes) of one token for logprobs; ``token_id:N`` when asked or untokenizable."""
    if tokenizer is None or as_ids:
        raw = b"" if tokenizer is None else bytes(tokenizer.token_bytes(token_id))
        return f"token_id:{token_id}", list(raw)
    raw = bytes(tokenizer.token_bytes(token_id))
    if not raw and tokenizer.is_special(token_id):
        text = tokenizer.token_str(token_id)
        return text, list(text.encode())
    return raw.decode("utf-8", errors="replace"), list(raw)


def top_entries(lp: TokenLogprob, k: int) -> list[tuple[int, float]]:
    return list(lp.top[:k]) if k > 0 else []
