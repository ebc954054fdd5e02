"""The protocol-neutral generation service: one conversation in, one engine call, one result out.

Every conversational front end (chat completions, responses) runs the same four steps:

1. :func:`prepare` checks the request without side effects: the structured-output plan (grammar
   for a response format or tools), the tokenizer, the exact prompt the template renders, the
   token limit against the context window and the sampling settings.
2. :func:`plan` runs live search when asked (the context goes into the prompt, which is then
   rendered again) and fixes the final ``SamplingParams``.
3. :func:`run` collects the whole result, or :func:`start` + :func:`steps` stream it as neutral
   events (the front end puts them into its own SSE framing via ``server.streaming``).
4. Usage is charged to the calling key's token budget once the engine finished.

Error statuses, messages and ``param`` names are the same for every front end; the names of the
fields they point at come from the :class:`ConversationInput`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from grokd.engine.chat_template import render_chat
from grokd.engine.outputs import RequestOutput, TokenLogprob
from grokd.engine.tokenizer import Tokenizer
from grokd.server.errors import APIError, invalid_request
from grokd.server.generation import live as live_context
from grokd.server.generation import structured
from grokd.server.generation.context import CallContext
from grokd.server.generation.types import (
    ChoiceFinished,
    ChoiceResult,
    ConversationInput,
    GenerationPlan,
    GenerationResult,
    GenerationUsage,
    PreparedRequest,
    SamplingSettings,
    StreamEvent,
    StreamFinished,
    StreamStep,
    TextDelta,
    TokenLogprobOutput,
    ToolCallDelta,
    ToolCallOutput,
    TopToken,
)
from grokd.server.registry import ServedModel
from grokd.server.routes import generation as gen
from grokd.server.streaming import StreamFailure

if TYPE_CHECKING:
    from grokd.server.state import EngineClient


def render_prompt(engine: EngineClient, conv: ConversationInput, messages: list[dict[str, Any]],
                  tools: list[dict[str, Any]] | None) -> tuple[str, list[int]]:
    """The exact text and token ids the model will see (also what usage counts)."""
    tokenizer = engine.tokenizer
    if tokenizer is None:  # prepare checks first
        raise invalid_request("This model has no tokenizer.", param=conv.input_param, code="no_tokenizer")
    try:
        text = render_chat(
            messages,
            template=engine.model_info.chat_template,
            tokenizer=tokenizer,
            tools=tools,
            add_generation_prompt=conv.add_generation_prompt,
            **(conv.chat_template_kwargs or {}),
        )
    except APIError:
        raise
    except (ValueError, TypeError) as exc:  # template errors raised for bad conversations
        raise invalid_request(f"Could not apply the chat template: {exc}", param=conv.input_param) from None
    return text, list(tokenizer.encode(text))


async def prepare(ctx: CallContext, conv: ConversationInput, settings: SamplingSettings,
                  model: ServedModel) -> PreparedRequest:
    """Check everything that can be checked before searching or queueing (see the module doc)."""
    engine = ctx.engine
    plan = await structured.plan_off_loop(conv.response_format, conv.tools, conv.tool_choice,
                                          conv.parallel_tool_calls, engine.model_info)
    if engine.tokenizer is None:
        raise invalid_request(f"Model `{model.id}` has no tokenizer: use /v1/completions with token-id prompts.",
                              param=conv.input_param, code="no_tokenizer")
    messages, template_tools = structured.prepare_messages(conv.messages, conv.tools, engine.model_info)
    text, prompt_ids = await asyncio.to_thread(render_prompt, engine, conv, messages, template_tools)  # off the loop
    if conv.max_tokens == 0:
        raise invalid_request(f"{conv.max_tokens_param}: must be >= 1", param=conv.max_tokens_param)
    gen.resolve_max_tokens(conv.max_tokens, len(prompt_ids), model.max_model_len,
                           param=conv.input_param, what=conv.input_param)
    gen.build_params(settings, max_tokens=conv.max_tokens or 1, logprobs=conv.logprobs)  # validate now
    return PreparedRequest(conv, settings, model.id, model.max_model_len, plan, messages, template_tools,
                           text, prompt_ids)


async def plan(ctx: CallContext, prepared: PreparedRequest, request_id: str) -> GenerationPlan:
    """Live context (when asked) into the prompt, then the final SamplingParams."""
    conv = prepared.conversation
    engine = ctx.engine
    text, prompt_ids = prepared.prompt_text, prepared.prompt_ids
    live = None
    if conv.live is not None:
        tokenizer = engine.tokenizer
        assert tokenizer is not None  # prepare checked
        live = await live_context.augment(ctx, conv.live, prepared.messages, tokenizer, len(prompt_ids),
                                          conv.max_tokens, prepared.max_model_len)
        if live.context:
            text, prompt_ids = await asyncio.to_thread(render_prompt, engine, conv, live.inject(prepared.messages),
                                                       prepared.template_tools)
    max_tokens = gen.resolve_max_tokens(conv.max_tokens, len(prompt_ids), prepared.max_model_len,
                                        param=conv.input_param, what=conv.input_param)
    params = gen.build_params(prepared.settings, max_tokens=max_tokens, logprobs=conv.logprobs)
    params.structured = prepared.structured.spec if prepared.structured is not None else None
    return GenerationPlan(request_id, prepared.model_id, text, prompt_ids, params, prepared.structured,
                          conv.logprobs, live, conv.input_param)


async def start(ctx: CallContext, plan: GenerationPlan) -> gen.EngineCall:
    """Queue the engine request; admission errors become API errors here, before any byte."""
    return await gen.start(ctx, plan.prompt_ids, plan.params, plan.request_id, param=plan.input_param)


def usage_of(plan: GenerationPlan, call: gen.EngineCall, completion_tokens: int) -> GenerationUsage:
    return GenerationUsage(call.prompt_tokens, completion_tokens, call.cached_tokens, plan.sources_used)


def logprob_outputs(tokenizer: Tokenizer | None, lps: list[TokenLogprob] | None, k: int) -> list[TokenLogprobOutput]:
    out = []
    for lp in lps or []:
        text, raw = gen.token_text(tokenizer, lp.token_id)
        out.append(TokenLogprobOutput(text, lp.logprob, raw, _top_tokens(tokenizer, gen.top_entries(lp, k)),
                                      lp.processed_logprob,
                                      None if lp.processed_top is None else
                                      _top_tokens(tokenizer, lp.processed_top[:k] if k > 0 else [])))
    return out


def _top_tokens(tokenizer: Tokenizer | None, entries: list[tuple[int, float]]) -> list[TopToken]:
    tops = []
    for tid, tlp in entries:
        ttext, traw = gen.token_text(tokenizer, tid)
        tops.append(TopToken(ttext, tlp, traw))
    return tops


def _tool_calls(calls: list[dict[str, Any]]) -> list[ToolCallOutput]:
    return [ToolCallOutput(c["id"], c["function"]["name"], c["function"]["arguments"], c.get("index", i))
            for i, c in enumerate(calls)]


async def run(ctx: CallContext, plan: GenerationPlan, call: gen.EngineCall) -> GenerationResult:
    """The whole result of a started call (a client that goes away aborts it: 499)."""
    tokenizer = ctx.engine.tokenizer
    (final,) = await gen.collect(ctx, [call])
    choices = []
    for o in final.outputs:
        if o.finish_reason == "error" or final.error:
            raise gen.engine_failure(final, plan.request_id)
        content, calls = structured.parse_reply(plan.structured, o.text)
        choices.append(ChoiceResult(
            index=o.index,
            content=content,
            tool_calls=_tool_calls(calls),
            logprobs=logprob_outputs(tokenizer, o.logprobs, plan.logprobs) if plan.logprobs is not None else None,
            finish_reason="tool_calls" if calls else o.finish_reason,
            completion_tokens=len(o.token_ids),
        ))
    completion_tokens = sum(c.completion_tokens for c in choices)
    ctx.charge(call.prompt_tokens + completion_tokens)
    return GenerationResult(plan, choices, usage_of(plan, call, completion_tokens))


async def steps(ctx: CallContext, plan: GenerationPlan, call: gen.EngineCall,
                outputs: AsyncIterator[tuple[int, RequestOutput]]) -> AsyncIterator[StreamStep]:
    """The engine's outputs as neutral events, one :class:`StreamStep` per engine step that has
    something to say; ends with :class:`StreamFinished`. An engine failure raises
    ``StreamFailure`` (the SSE layer turns it into the front end's in-band error)."""
    tokenizer = ctx.engine.tokenizer
    n = plan.params.n
    completion_tokens = 0
    done: set[int] = set()
    splitters = {i: structured.ReplyStreamer(plan.structured) for i in range(n)}
    async for _, out in outputs:
        if out.error:
            raise StreamFailure(f"The engine failed while generating (request id {call.request_id}): "
                                f"{out.error}")
        events: list[StreamEvent] = []
        for o in out.outputs:
            if o.index in done:
                continue
            completion_tokens += len(o.delta_token_ids)
            reason = o.finish_reason
            if reason == "error":
                raise StreamFailure(f"The engine failed while generating (request id {call.request_id})")
            lps = (logprob_outputs(tokenizer, o.delta_logprobs, plan.logprobs)
                   if plan.logprobs is not None and o.delta_logprobs else None)
            splitter = splitters[o.index]
            text, calls = splitter.feed(o.delta_text, final=reason is not None)
            if not text and not calls and lps is None and reason is None:
                continue
            if text or lps is not None:
                events.append(TextDelta(o.index, text, lps))
            if calls:
                events.append(ToolCallDelta(o.index, _tool_calls(calls)))
            if reason is not None:
                done.add(o.index)
                events.append(ChoiceFinished(o.index, "tool_calls" if splitter.made_calls else reason))
        if events:
            yield StreamStep(events)
    ctx.charge(call.prompt_tokens + completion_tokens)
    yield StreamStep([StreamFinished(usage_of(plan, call, completion_tokens))])
