"""POST/GET/DELETE /v1/responses: the Responses wire format over the generation service.

``input`` (plus the stored conversation of ``previous_response_id`` and the request's own
``instructions``) becomes a neutral conversation; the service's result becomes output items, or
its stream events Responses SSE events. A stored response belongs to the key that created it:
another key gets the same 404 as for an unknown id.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from grokd.server.errors import APIError, invalid_request, not_supported
from grokd.server.generation import service
from grokd.server.generation.types import ConversationInput
from grokd.server.jobs.tenancy import current_tenant
from grokd.server.protocol import UNSUPPORTED_FIELDS, new_id, now
from grokd.server.responses import conversation as convert
from grokd.server.responses.events import ResponseEventWriter, renderer
from grokd.server.responses.output import ResponseEnvelope, output_items, reply_messages, usage_out
from grokd.server.responses.protocol import (
    RESPONSES_IGNORED_FIELDS,
    RESPONSES_UNSUPPORTED_FIELDS,
    DeletedResponse,
    ResponseObject,
    ResponsesRequest,
)
from grokd.server.responses.store import ResponseStore
from grokd.server.routes import generation as gen
from grokd.server.routes.deps import context_of, get_state, require_json, resolve_model
from grokd.server.streaming import sse_response

log = logging.getLogger("grokd.server")
router = APIRouter()

LOGPROBS_INCLUDE = "message.output_text.logprobs"


def _store(request: Request) -> ResponseStore:
    store = get_state(request).responses
    if store is None:  # create_app always builds one; a bare state in a test may not
        raise not_supported("store", "stored responses on this server")
    return store


def _owner(request: Request) -> str:
    """The calling key's ``key_id`` (``jobs.tenancy``; the anonymous key's on a server without keys)."""
    return current_tenant(request).owner


def _not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", type="invalid_request_error",
                    code="not_found")


def reject_unsupported(req: ResponsesRequest) -> None:
    for name, value in req.extra_fields().items():
        what = RESPONSES_UNSUPPORTED_FIELDS.get(name) or UNSUPPORTED_FIELDS.get(name)
        if what is not None and value not in (None, False, [], {}, ""):
            raise not_supported(name, what)


def _logprobs(req: ResponsesRequest) -> int | None:
    """Top-k per token when logprobs were asked for (``logprobs``, the OpenAI ``include`` entry,
    or ``top_logprobs`` > 0), else None."""
    wanted = req.logprobs or LOGPROBS_INCLUDE in (req.include or []) or bool(req.top_logprobs)
    return (req.top_logprobs or 0) if wanted else None


@router.post("/v1/responses", dependencies=[Depends(require_json)], response_model=None)
async def create_response(req: ResponsesRequest, request: Request) -> Response:
    state = get_state(request)
    model = resolve_model(request, req.model)
    reject_unsupported(req)
    store = _store(request)
    owner = _owner(request)
    history: list[dict] = []
    if req.previous_response_id:
        previous = store.get(req.previous_response_id, owner)
        if previous is None:
            raise invalid_request(f"Previous response with id '{req.previous_response_id}' not found.",
                                  param="previous_response_id", code="previous_response_not_found")
        history = previous.conversation
    new_messages = convert.input_messages(req.input, model)
    if not history and not new_messages:
        raise invalid_request("input: must contain at least one message", param="input")
    instructions = [{"role": "system", "content": req.instructions}] if req.instructions else []
    tools, live = convert.function_tools(req)
    conv = ConversationInput(
        messages=[*instructions, *history, *new_messages],
        tools=tools,
        tool_choice=convert.tool_choice(req.tool_choice),
        parallel_tool_calls=req.parallel_tool_calls,
        response_format=convert.response_format(req),
        live=live,
        max_tokens=req.max_output_tokens,
        logprobs=_logprobs(req),
        input_param="input",
        max_tokens_param="max_output_tokens",
    )
    rid = new_id("resp_")
    ctx = context_of(request)
    try:
        prepared = await service.prepare(ctx, conv, gen.settings_of(req, ignored=RESPONSES_IGNORED_FIELDS),
                                         model)
        plan = await service.plan(ctx, prepared, rid)
    except APIError as err:
        raise convert.wire_error(err) from None
    log.info("response %s model=%s prompt_tokens=%d max_tokens=%d stream=%s previous=%s%s", rid, model.id,
             len(plan.prompt_ids), plan.params.max_tokens, req.stream, req.previous_response_id,
             f" prompt={plan.prompt_text!r}" if state.config.log_prompts else "")
    call = await service.start(ctx, plan)
    envelope = ResponseEnvelope(rid, now(), model.id, req, [t.model_dump(by_alias=True, exclude_none=True)
                                                            for t in req.tools or []])

    def keep(response: ResponseObject) -> None:
        if req.store and response.status != "failed":
            seen = [*history, *new_messages, *reply_messages(response.output)]
            store.put(rid, owner, response.model_dump(mode="json"), seen)

    if req.stream:
        writer = ResponseEventWriter(envelope, plan)
        return sse_response([call], renderer(ctx, call, writer, keep), rid, headers=plan.headers,
                            done=None, on_failure=writer.failure,
                            stall_timeout_s=ctx.state.config.stream_stall_timeout_s)

    result = await service.run(ctx, plan, call)
    (choice,) = result.choices
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    body = envelope.build(status, output_items(plan, choice), usage_out(result.usage, plan), plan.citations)
    keep(body)
    return JSONResponse(body.model_dump(mode="json"), headers=plan.headers)


@router.get("/v1/responses/{response_id}", response_model=None)
async def get_response(response_id: str, request: Request) -> Response:
    stored = _store(request).get(response_id, _owner(request))
    if stored is None:
        raise _not_found(response_id)
    return JSONResponse(stored.body)


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request) -> DeletedResponse:
    if not _store(request).delete(response_id, _owner(request)):
        raise _not_found(response_id)
    return DeletedResponse(id=response_id)
