"""POST /v1/chat/completions: the chat wire format over the generation service. The request
becomes a neutral conversation (template messages, tools, response format, sampling settings);
the service's result or stream events become one chat.completion or SSE chunks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from grokd.engine.outputs import RequestOutput
from grokd.server.errors import invalid_request, not_supported
from grokd.server.generation import live as live_context
from grokd.server.generation import service
from grokd.server.generation.context import CallContext
from grokd.server.generation.types import (
    ChoiceFinished,
    ConversationInput,
    GenerationPlan,
    GenerationResult,
    GenerationUsage,
    PreparedRequest,
    StreamEvent,
    StreamFinished,
    StreamStep,
    TextDelta,
    TokenLogprobOutput,
    ToolCallDelta,
    ToolCallOutput,
    TopToken,
)
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
    FunctionCall,
    PromptTokensDetails,
    Tool,
    ToolCall,
    TopLogprob,
    Usage,
    new_id,
    now,
)
from grokd.server.registry import ServedModel
from grokd.server.routes import generation as gen
from grokd.server.routes.deps import context_of, get_state, require_json
from grokd.server.routes.generation import EngineCall
from grokd.server.streaming import Renderer, encode_event, sse_response

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


def conversation_of(req: ChatCompletionRequest, model: ServedModel,
                    tools: list[Tool] | None) -> ConversationInput:
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    return ConversationInput(
        messages=template_messages(req, model),
        tools=[t.model_dump(by_alias=True, exclude_none=True) for t in tools] if tools else None,
        tool_choice=req.tool_choice,
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=req.response_format,
        max_tokens=requested,
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        add_generation_prompt=req.add_generation_prompt,
        chat_template_kwargs=req.chat_template_kwargs,
        input_param="messages",
        max_tokens_param="max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens",
    )


def chat_logprobs(lps: list[TokenLogprobOutput] | None) -> ChoiceLogprobs:
    return ChoiceLogprobs(content=[
        ChatTokenLogprob(token=lp.token, logprob=lp.logprob, bytes=lp.bytes, top_logprobs=_tops(lp.top),
                         processed_logprob=lp.processed_logprob,
                         processed_top_logprobs=None if lp.processed_top is None else _tops(lp.processed_top))
        for lp in lps or []
    ])


def _tops(tops: list[TopToken]) -> list[TopLogprob]:
    return [TopLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes) for t in tops]


def chat_usage(u: GenerationUsage) -> Usage:
    return Usage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=u.cached_tokens),
        num_sources_used=u.sources_used,
    )


def _tool_call(c: ToolCallOutput) -> ToolCall:
    return ToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments))


def _delta_call(c: ToolCallOutput) -> dict[str, Any]:
    return {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}, "index": c.index}


async def prepare_chat(ctx: CallContext, req: ChatCompletionRequest) -> tuple[ServedModel, PreparedRequest]:
    """Every check of a chat request before anything is searched or queued: the model, the
    unsupported fields, the conversation, the prompt against the context window. The HTTP route
    and the gRPC Chat service both start here, so they accept and refuse the same requests."""
    model = ctx.resolve_model(req.model)
    live_params, tools = live_context.resolve_request(req.search_parameters, req.tools)
    gen.reject_unsupported(req)
    if req.top_logprobs and not req.logprobs:  # 0 without logprobs is harmless; more is a mistake
        raise invalid_request("top_logprobs: requires logprobs to be true", param="top_logprobs")
    conv = conversation_of(req, model, tools)
    conv.live = live_params
    return model, await service.prepare(ctx, conv, gen.request_settings(req), model)


async def start_chat(ctx: CallContext, prepared: PreparedRequest, req: ChatCompletionRequest,
                     model: ServedModel) -> tuple[GenerationPlan, EngineCall]:
    """Live context, the final plan, and the engine request queued (logged once, as chat)."""
    plan = await service.plan(ctx, prepared, new_id("chatcmpl-"))
    log.info("chat %s model=%s prompt_tokens=%d max_tokens=%d n=%d stream=%s%s", plan.request_id, model.id,
             len(plan.prompt_ids), plan.params.max_tokens, req.n, req.stream,
             f" prompt={plan.prompt_text!r}" if ctx.state.config.log_prompts else "")
    return plan, await service.start(ctx, plan)


def completion_body(result: GenerationResult, model: ServedModel, created: int) -> ChatCompletionResponse:
    """The chat.completion object of a finished generation."""
    plan = result.plan
    choices = [
        ChatChoice(
            index=c.index,
            message=ChatResponseMessage(content=c.content,
                                        tool_calls=[_tool_call(t) for t in c.tool_calls] if c.tool_calls else None),
            logprobs=chat_logprobs(c.logprobs) if c.logprobs is not None else None,
            finish_reason=c.finish_reason,
        )
        for c in result.choices
    ]
    return ChatCompletionResponse(
        id=plan.request_id, created=created, model=model.id, choices=choices, usage=chat_usage(result.usage),
        system_fingerprint=model.system_fingerprint, citations=plan.citations,
    )


@router.post("/v1/chat/completions", dependencies=[Depends(require_json)], response_model=None)
async def create_chat_completion(req: ChatCompletionRequest, request: Request) -> Response:
    ctx = context_of(request)
    model, prepared = await prepare_chat(ctx, req)
    if req.deferred:
        return defer(request, req)
    plan, call = await start_chat(ctx, prepared, req, model)
    created = now()
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return sse_response([call], _chunks(ctx, call, plan, model, created, req.n, include_usage),
                            plan.request_id, headers=plan.headers,
                            stall_timeout_s=ctx.state.config.stream_stall_timeout_s)

    result = await service.run(ctx, plan, call)
    body = completion_body(result, model, created)
    return JSONResponse({**body.model_dump(mode="json"), **live_context.debug_fields(request, plan.live)},
                        headers=plan.headers)


def _chunks(ctx: CallContext, call: EngineCall, plan: GenerationPlan, model: ServedModel, created: int,
            n: int, include_usage: bool) -> Renderer:
    """SSE chunks, one per choice per engine step; live-search ``citations`` ride on the last
    chunk (xAI's convention)."""

    def chunk(choices: list[ChatChunkChoice], usage: Usage | None = None, last: bool = False) -> bytes:
        return encode_event(ChatCompletionChunk(
            id=plan.request_id, created=created, model=model.id, choices=choices, usage=usage,
            system_fingerprint=model.system_fingerprint, citations=plan.citations if last else None,
        ))

    async def render(outputs: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[bytes]:
        for i in range(n):
            yield chunk([ChatChunkChoice(index=i, delta=ChatDelta(role="assistant", content=""))])
        finished = 0
        async for step in service.steps(ctx, plan, call, outputs):
            for index, events in _by_choice(step).items():
                text, calls, lps, reason = "", [], None, None
                for e in events:
                    if isinstance(e, TextDelta):
                        text += e.text
                        lps = [*(lps or []), *e.logprobs] if e.logprobs is not None else lps
                    elif isinstance(e, ToolCallDelta):
                        calls += [_delta_call(c) for c in e.calls]
                    elif isinstance(e, ChoiceFinished):
                        reason = e.finish_reason
                        finished += 1
                delta = ChatDelta(content=text or None, tool_calls=calls or None)
                last = not include_usage and finished == n
                yield chunk([ChatChunkChoice(index=index, delta=delta,
                                             logprobs=chat_logprobs(lps) if lps is not None else None,
                                             finish_reason=reason)], last=last)
            for e in step.events:
                if isinstance(e, StreamFinished) and include_usage:
                    yield chunk([], chat_usage(e.usage), last=True)

    return render


def _by_choice(step: StreamStep) -> dict[int, list[StreamEvent]]:
    """The step's per-choice events (usage excluded), choices in order of first appearance."""
    out: dict[int, list[StreamEvent]] = {}
    for e in step.events:
        if not isinstance(e, StreamFinished):
            out.setdefault(e.index, []).append(e)
    return out
