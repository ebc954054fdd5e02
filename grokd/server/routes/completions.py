"""POST /v1/completions (legacy text completions): string, list of strings, token ids or lists
of token ids; ``echo`` with prompt logprobs; OpenAI's legacy logprobs arrays;
``return_tokens_as_token_ids`` spells tokens ``token_id:N`` like vLLM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from grokd.engine.outputs import RequestOutput, TokenLogprob
from grokd.engine.tokenizer import Tokenizer
from grokd.server.auth import ApiKey
from grokd.server.errors import invalid_request, not_supported
from grokd.server.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    PromptTokensDetails,
    Usage,
    new_id,
    now,
)
from grokd.server.routes import generation as gen
from grokd.server.routes.deps import context_of, get_engine, get_state, require_json, resolve_model
from grokd.server.streaming import Renderer, StreamFailure, encode_event, sse_response

if TYPE_CHECKING:
    from grokd.server.state import ServerState

log = logging.getLogger("grokd.server")
router = APIRouter()


def prompts_of(req: CompletionRequest, tokenizer: Tokenizer | None,
               vocab_size: int | None) -> list[tuple[str | None, list[int]]]:
    """``(text or None, token ids)`` per prompt; token ids are checked against the vocabulary."""
    p = req.prompt
    if isinstance(p, str):
        raw: list[str | list[int]] = [p]
    elif isinstance(p[0], int):
        raw = [list(p)]
    else:
        raw = list(p)
    out: list[tuple[str | None, list[int]]] = []
    for item in raw:
        if isinstance(item, str):
            if tokenizer is None:
                raise invalid_request("This model has no tokenizer: send the prompt as token ids.",
                                      param="prompt", code="no_tokenizer")
            ids = list(tokenizer.encode(item))
            if not ids:
                raise invalid_request("prompt: must not be empty", param="prompt")
            out.append((item, ids))
        else:
            bad = [t for t in item if t < 0 or (vocab_size is not None and t >= vocab_size)]
            if bad:
                raise invalid_request(f"prompt: token id {bad[0]} is outside the vocabulary (size {vocab_size})",
                                      param="prompt")
            out.append((None, list(item)))
    return out


class _LogprobBuilder:
    """Accumulates OpenAI's parallel logprob arrays for one choice."""

    def __init__(self, tokenizer: Tokenizer | None, k: int, as_ids: bool, offset: int = 0) -> None:
        self.tokenizer, self.k, self.as_ids, self.offset = tokenizer, k, as_ids, offset
        self.lp = CompletionLogprobs()

    def add(self, lp: TokenLogprob | None, token_id: int) -> None:
        text, _ = gen.token_text(self.tokenizer, token_id, self.as_ids)
        self.lp.tokens.append(text)
        self.lp.text_offset.append(self.offset)
        self.offset += len(_plain(self.tokenizer, token_id))
        if lp is None:
            self.lp.token_logprobs.append(None)
            self.lp.top_logprobs.append(None)
            return
        self.lp.token_logprobs.append(lp.logprob)
        top: dict[str, float] = {}
        for tid, tlp in gen.top_entries(lp, self.k):
            top.setdefault(gen.token_text(self.tokenizer, tid, self.as_ids)[0], tlp)
        top.setdefault(text, lp.logprob)  # the sampled token is always listed (as OpenAI/vLLM do)
        self.lp.top_logprobs.append(top)

    def take(self) -> CompletionLogprobs:
        out, self.lp = self.lp, CompletionLogprobs()
        return out


def _plain(tokenizer: Tokenizer | None, token_id: int) -> str:
    return "" if tokenizer is None else gen.token_text(tokenizer, token_id)[0]


def _prompt_text(tokenizer: Tokenizer | None, text: str | None, ids: list[int]) -> str:
    if text is not None:
        return text
    return "" if tokenizer is None else tokenizer.decode(ids, skip_special_tokens=False)


@router.post("/v1/completions", dependencies=[Depends(require_json)], response_model=None)
async def create_completion(req: CompletionRequest, request: Request) -> Response | CompletionResponse:
    state = get_state(request)
    model = resolve_model(request, req.model)
    gen.reject_unsupported(req)
    if req.suffix:
        raise not_supported("suffix", "`suffix` (insertion)")
    engine = get_engine(request)
    tokenizer = engine.tokenizer
    vocab = engine.model_info.vocab_size
    prompts = await asyncio.to_thread(prompts_of, req, tokenizer, vocab)  # tokenizing is CPU work
    score_only = req.max_tokens == 0
    if score_only and not req.echo:
        raise invalid_request("max_tokens: must be >= 1 (0 is allowed only with echo)", param="max_tokens")
    k = req.logprobs
    rid = new_id("cmpl-")
    ctx = context_of(request)
    calls: list[gen.EngineCall] = []
    try:
        for i, (text, ids) in enumerate(prompts):
            max_tokens = gen.resolve_max_tokens(1 if score_only else req.max_tokens, len(ids),
                                                model.max_model_len, param="prompt", what="prompt")
            params = gen.build_params(gen.request_settings(req), max_tokens=max_tokens, logprobs=k,
                                      prompt_logprobs=k if (req.echo and k is not None) else None)
            log.info("completion %s-%d model=%s prompt_tokens=%d max_tokens=%d n=%d%s", rid, i, model.id,
                     len(ids), max_tokens, req.n, f" prompt={text!r}" if state.config.log_prompts else "")
            calls.append(await gen.start(ctx, ids, params, f"{rid}-{i}", param="prompt"))
    except BaseException:
        for c in calls:
            await c.close()
        raise
    key = getattr(request.state, "api_key", None)
    created = now()
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse_response(calls, _chunks(state, tokenizer, calls, prompts, model.id, model.system_fingerprint, created,
                                           req, score_only, include_usage, key), rid,
                            stall_timeout_s=state.config.stream_stall_timeout_s)

    finals = await gen.collect(ctx, calls)
    choices: list[CompletionChoice] = []
    completion_tokens = 0
    for i, final in enumerate(finals):
        text, ids = prompts[i]
        prefix = _prompt_text(tokenizer, text, ids) if req.echo else ""
        for o in final.outputs:
            if o.finish_reason == "error" or final.error:
                raise gen.engine_failure(final, calls[i].request_id)
            gen_ids = [] if score_only else o.token_ids
            completion_tokens += len(gen_ids)
            logprobs = None
            if k is not None:
                b = _LogprobBuilder(tokenizer, k, req.return_tokens_as_token_ids)
                if req.echo:
                    _add_prompt(b, final, ids)
                for j, tid in enumerate(gen_ids):
                    b.add(o.logprobs[j] if o.logprobs and j < len(o.logprobs) else None, tid)
                logprobs = b.take()
            choices.append(CompletionChoice(
                index=i * req.n + o.index,
                text=prefix + ("" if score_only else o.text),
                logprobs=logprobs,
                finish_reason="length" if score_only else o.finish_reason,
            ))
    prompt_tokens = sum(len(ids) for _, ids in prompts)
    if key is not None:
        state.auth.charge_tokens(key, prompt_tokens + completion_tokens)
    return CompletionResponse(
        id=rid, created=created, model=model.id, choices=choices,
        usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                    total_tokens=prompt_tokens + completion_tokens,
                    prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(c.cached_tokens for c in calls))),
        system_fingerprint=model.system_fingerprint,
    )


def _add_prompt(b: _LogprobBuilder, out: RequestOutput, ids: list[int]) -> None:
    plps = out.prompt_logprobs or []
    for j, tid in enumerate(ids):
        b.add(plps[j] if j > 0 and j < len(plps) else None, tid)


def _chunks(state: ServerState, tokenizer: Tokenizer | None, calls: list[gen.EngineCall],
            prompts: list[tuple[str | None, list[int]]], model_id: str, fingerprint: str, created: int,
            req: CompletionRequest, score_only: bool, include_usage: bool, key: ApiKey | None) -> Renderer:
    k = req.logprobs
    rid = calls[0].request_id.rsplit("-", 1)[0]

    def chunk(choices: list[CompletionChoice], usage: Usage | None = None) -> bytes:
        return encode_event(CompletionResponse(id=rid, created=created, model=model_id, choices=choices,
                                               usage=usage, system_fingerprint=fingerprint))

    async def render(outputs: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[bytes]:
        builders: dict[int, _LogprobBuilder] = {}
        done: set[int] = set()
        completion_tokens = 0
        async for i, out in outputs:
            if out.error:
                raise StreamFailure(f"The engine failed while generating (request id {calls[i].request_id}): "
                                    f"{out.error}")
            text, ids = prompts[i]
            for o in out.outputs:
                index = i * req.n + o.index
                if index in done:
                    continue
                if o.finish_reason == "error":
                    raise StreamFailure(f"The engine failed while generating (request id {calls[i].request_id})")
                prefix = ""
                if index not in builders:
                    builders[index] = _LogprobBuilder(tokenizer, k or 0, req.return_tokens_as_token_ids)
                    if req.echo:
                        prefix = _prompt_text(tokenizer, text, ids)
                        if k is not None:
                            _add_prompt(builders[index], out, ids)
                b = builders[index]
                delta_ids = [] if score_only else o.delta_token_ids
                completion_tokens += len(delta_ids)
                if k is not None:
                    dlps = o.delta_logprobs or []
                    for j, tid in enumerate(delta_ids):
                        b.add(dlps[j] if j < len(dlps) else None, tid)
                delta = prefix + ("" if score_only else o.delta_text)
                reason = ("length" if score_only else o.finish_reason) if o.finish_reason else None
                if not delta and reason is None and not b.lp.tokens:
                    continue
                yield chunk([CompletionChoice(index=index, text=delta,
                                              logprobs=b.take() if k is not None else None,
                                              finish_reason=reason)])
                if reason is not None:
                    done.add(index)
        prompt_tokens = sum(len(ids) for _, ids in prompts)
        if key is not None:
            state.auth.charge_tokens(key, prompt_tokens + completion_tokens)
        if include_usage:
            yield chunk([], Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                  total_tokens=prompt_tokens + completion_tokens,
                                  prompt_tokens_details=PromptTokensDetails(
                                      cached_tokens=sum(c.cached_tokens for c in calls))))

    return render
