"""POST /v1/chat/completions: template the messages with the engine's tokenizer, check the
context window, run the engine, answer as one chat.completion or as SSE chunks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from grokd.engine.chat_template import render_chat
from grokd.engine.outputs import CompletionOutput, RequestOutput, TokenLogprob
from grokd.engine.tokenizer import Tokenizer
from grokd.server.auth import ApiKey
from grokd.server.errors import APIError, invalid_request, not_supported
from grokd.server.jobs.tenancy import current_tenant
from grokd.server.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatResponseMessage,
    ChatTokenLogprob,
    ChoiceLogprobs,
    PromptTokensDetails,
    ToolCall,
    TopLogprob,
    Usage,
    new_id,
    now,
)
from grokd.server.registry import ServedModel
from grokd.server.routes import generation as gen
from grokd.server.routes import live_context, structured
from grokd.server.routes.deps import get_engine, get_state, require_json, resolve_model
from grokd.server.streaming import Renderer, StreamFailure, encode_event, sse_response

if TYPE_CHECKING:
    from grokd.server.state import EngineClient, ServerState

log = logging.getLogger("grokd.server")
router = APIRouter()


def defer(request: Request, req: ChatCompletionRequest) -> JSONResponse:
    """xAI deferred completion: validated now, run in the background, fetched by request id."""
    jobs = get_state(request).jobs
    if jobs is None:
        raise not_supported("deferred", "deferred completions (the job store is disabled)")
    if req.stream:
        raise invalid_request("deferred: cannot be combined with stream", param="deferred")
    body = req.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return JSONResponse({"request_id": jobs.deferred.submit(body, current_tenant(request).owner)})


def template_messages(req: ChatCompletionRequest, model: ServedModel) -> list[dict[str, Any]]:
    """Plain dicts for the template; text parts joined, image parts refused on text-only models."""
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(req.messages):
        d = msg.model_dump(exclude_none=True)
        if d["role"] == "developer":  # OpenAI's newer name for system instructions
            d["role"] = "system"
        if isinstance(msg.content, list):
            texts: list[str] = []
            for j, part in enumerate(msg.content):
                if part.type == "text":
                    texts.append(part.text or "")
                elif part.type in ("image_url", "input_image", "image"):
                    if not model.accepts_images:
                        raise invalid_request(
                            f"Model `{model.id}` does not accept image inputs (input_modalities: "
                            f"{', '.join(model.input_modalities)}).",
                            param=f"messages[{i}].content[{j}]",
                            code="unsupported_modality",
                        )
                    raise not_supported(f"messages[{i}].content[{j}]", "image inputs")
                else:
                    raise invalid_request(f"Unknown content part type `{part.type}`",
                                          param=f"messages[{i}].content[{j}].type")
            d["content"] = "\n".join(texts)
        out.append(d)
    return out


def render_prompt(engine: EngineClient, req: ChatCompletionRequest, messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> tuple[str, list[int]]:
    """The exact text and token ids the model will see (also what usage counts)."""
    tokenizer = engine.tokenizer
    if tokenizer is None:  # the route checks first
        raise invalid_request("This model has no tokenizer.", param="messages", code="no_tokenizer")
    try:
        text = render_chat(
            messages,
            template=engine.model_info.chat_template,
            tokenizer=tokenizer,
            tools=tools,
            add_generation_prompt=req.add_generation_prompt,
            **(req.chat_template_kwargs or {}),
        )
    except APIError:
        raise
    except (ValueError, TypeError) as exc:  # template errors raised for bad conversations
        raise invalid_request(f"Could not apply the chat template: {exc}", param="messages") from None
    return text, list(tokenizer.encode(text))


def chat_logprobs(tokenizer: Tokenizer | None, lps: list[TokenLogprob] | None, k: int) -> ChoiceLogprobs:
    content = []
    for lp in lps or []:
        text, raw = gen.token_text(tokenizer, lp.token_id)
        tops = []
        for tid, tlp in gen.top_entries(lp, k):
            ttext, traw = gen.token_text(tokenizer, tid)
            tops.append(TopLogprob(token=ttext, logprob=tlp, bytes=traw))
        content.append(ChatTokenLogprob(token=text, logprob=lp.logprob, bytes=raw, top_logprobs=tops))
    return ChoiceLogprobs(content=content)


def finish_reason(o: CompletionOutput, out: RequestOutput, request_id: str) -> str | None:
    if o.finish_reason == "error" or out.error:
        raise gen.engine_failure(out, request_id)
    return o.finish_reason


def usage_of(calls: list[gen.EngineCall], completion_tokens: int) -> Usage:
    prompt = sum(c.prompt_tokens for c in calls)
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion_tokens,
        total_tokens=prompt + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(c.cached_tokens for c in calls)),
    )


@router.post("/v1/chat/completions", dependencies=[Depends(require_json)], response_model=None)
async def create_chat_completion(req: ChatCompletionRequest, request: Request) -> Response:
    state = get_state(request)
    engine = get_engine(request)
    model = resolve_model(request, req.model)
    live_params, tools = live_context.resolve_request(req)
    gen.reject_unsupported(req)
    plan = structured.plan(req, tools, engine.model_info)
    if req.top_logprobs and not req.logprobs:  # 0 without logprobs is harmless; more is a mistake
        raise invalid_request("top_logprobs: requires logprobs to be true", param="top_logprobs")
    tokenizer = engine.tokenizer
    if tokenizer is None:
        raise invalid_request(f"Model `{model.id}` has no tokenizer: use /v1/completions with token-id prompts.",
                              param="messages", code="no_tokenizer")
    messages, template_tools = structured.prepare_messages(template_messages(req, model), tools, engine.model_info)
    text, prompt_ids = await asyncio.to_thread(render_prompt, engine, req, messages, template_tools)  # off the loop
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    if requested == 0:
        raise invalid_request(f"{param}: must be >= 1", param=param)
    gen.resolve_max_tokens(requested, len(prompt_ids), model.max_model_len, param="messages", what="messages")
    k = req.top_logprobs or 0
    gen.build_params(req, max_tokens=requested or 1, logprobs=k if req.logprobs else None)  # validate now
    if req.deferred:
        return defer(request, req)
    live = None
    if live_params is not None:
        live = await live_context.augment(request, live_params, messages, tokenizer, len(prompt_ids),
                                          requested, model.max_model_len)
        if live.context:
            text, prompt_ids = await asyncio.to_thread(render_prompt, engine, req, live.inject(messages),
                                                       template_tools)
    max_tokens = gen.resolve_max_tokens(requested, len(prompt_ids), model.max_model_len,
                                        param="messages", what="messages")
    params = gen.build_params(req, max_tokens=max_tokens, logprobs=k if req.logprobs else None)
    params.structured = plan.spec if plan is not None else None
    rid = new_id("chatcmpl-")
    log.info("chat %s model=%s prompt_tokens=%d max_tokens=%d n=%d stream=%s%s", rid, model.id,
             len(prompt_ids), max_tokens, req.n, req.stream,
             f" prompt={text!r}" if state.config.log_prompts else "")
    call = await gen.start(request, prompt_ids, params, rid, param="messages")
    key = getattr(request.state, "api_key", None)
    created = now()
    headers = dict(live.headers) if live is not None else {}
    citations = live.response_fields().get("citations") if live is not None else None
    sources_used = live.usage_fields().get("num_sources_used") if live is not None else None
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        render = _chunks(state, tokenizer, call, model, created, req, k, include_usage, key, citations, sources_used, plan)
        return sse_response([call], render, rid, headers=headers)

    (final,) = await gen.collect(request, [call])
    choices = []
    for o in final.outputs:
        reason = finish_reason(o, final, rid)
        content, calls = structured.parse_reply(plan, o.text)
        choices.append(ChatChoice(
            index=o.index,
            message=ChatResponseMessage(content=content, tool_calls=[ToolCall.model_validate(c) for c in calls]
                                        if calls else None),
            logprobs=chat_logprobs(tokenizer, o.logprobs, k) if req.logprobs else None,
            finish_reason="tool_calls" if calls else reason,
        ))
    completion_tokens = sum(len(o.token_ids) for o in final.outputs)
    if key is not None:
        state.auth.charge_tokens(key, call.prompt_tokens + completion_tokens)
    usage = usage_of([call], completion_tokens)
    usage.num_sources_used = sources_used
    body = ChatCompletionResponse(
        id=rid, created=created, model=model.id, choices=choices, usage=usage,
        system_fingerprint=model.system_fingerprint, citations=citations,
    )
    return JSONResponse({**body.model_dump(mode="json"), **live_context.debug_fields(request, live)},
                        headers=headers)


def _chunks(state: ServerState, tokenizer: Tokenizer, call: gen.EngineCall, model: ServedModel, created: int,
            req: ChatCompletionRequest, k: int, include_usage: bool, key: ApiKey | None,
            citations: list[str] | None, sources_used: int | None,
            plan: structured.StructuredPlan | None) -> Renderer:
    """SSE chunks; live-search ``citations`` ride on the last chunk (xAI's convention)."""

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, last: bool = False) -> bytes:
        return encode_event(ChatCompletionChunk(
            id=call.request_id, created=created, model=model.id, choices=choices, usage=usage,
            system_fingerprint=model.system_fingerprint, citations=citations if last else None,
        ))

    async def render(outputs: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[bytes]:
        for i in range(req.n):
            yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
        completion_tokens = 0
        done: set[int] = set()
        splitters = {i: structured.ReplyStreamer(plan) for i in range(req.n)}
        async for _, out in outputs:
            if out.error:
                raise StreamFailure(f"The engine failed while generating (request id {call.request_id}): "
                                    f"{out.error}")
            for o in out.outputs:
                if o.index in done:
                    continue
                completion_tokens += len(o.delta_token_ids)
                reason = o.finish_reason
                if reason == "error":
                    raise StreamFailure(f"The engine failed while generating (request id {call.request_id})")
                lps = chat_logprobs(tokenizer, o.delta_logprobs, k) if req.logprobs and o.delta_logprobs else None
                splitter = splitters[o.index]
                text, calls = splitter.feed(o.delta_text, final=reason is not None)
                if not text and not calls and lps is None and reason is None:
                    continue
                if reason is not None:
                    done.add(o.index)
                    reason = "tool_calls" if splitter.made_calls else reason
                delta = ChatDelta(content=text or None, tool_calls=calls or None)
                last = not include_usage and len(done) == req.n
                yield chunk([ChatChunkChoice(index=o.index, delta=delta, logprobs=lps, finish_reason=reason)],
                            last=last)
        if key is not None:
            state.auth.charge_tokens(key, call.prompt_tokens + completion_tokens)
        if include_usage:
            usage = usage_of([call], completion_tokens)
            usage.num_sources_used = sources_used
            yield chunk([], usage, last=True)

    return render
