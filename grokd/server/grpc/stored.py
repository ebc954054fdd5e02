"""Completions kept in the stored-responses store (``responses.store``, shared with
``/v1/responses``): a gRPC request with ``store_messages`` keeps its chat.completion object and
the conversation it continues, ``previous_response_id`` continues a stored conversation
(whichever API stored it), and ``GetStoredCompletion`` answers either kind of stored object as
a ``GetChatCompletionResponse``. A stream with ``store_messages`` is gathered while it runs
(:class:`StreamRecord`) and stored once it finished."""

from __future__ import annotations

from typing import Any

from grokd.server.errors import APIError, invalid_request, not_supported
from grokd.server.generation.types import (
    ChoiceFinished,
    ChoiceResult,
    GenerationPlan,
    GenerationResult,
    GenerationUsage,
    StreamFinished,
    StreamStep,
    TextDelta,
    ToolCallDelta,
)
from grokd.server.grpc.proto import chat_pb2
from grokd.server.grpc.responses import ASSISTANT, completion_response, finish_reason, sampling_usage
from grokd.server.protocol import ChatCompletionResponse
from grokd.server.responses.store import ResponseStore
from grokd.server.state import ServerState


def store_of(state: ServerState) -> ResponseStore:
    if state.responses is None:
        raise not_supported("store_messages", "stored completions on this server")
    return state.responses


def not_found(response_id: str) -> APIError:
    return APIError(404, f"Response with id '{response_id}' not found.", type="invalid_request_error",
                    code="not_found", param="response_id")


def history(state: ServerState, previous_response_id: str, owner: str) -> list[dict[str, Any]]:
    """The stored conversation to continue (messages as the chat route takes them)."""
    previous = store_of(state).get(previous_response_id, owner)
    if previous is None:
        raise invalid_request(f"Previous response with id '{previous_response_id}' not found.",
                              param="previous_response_id", code="previous_response_not_found")
    return previous.conversation


def keep(state: ServerState, owner: str, body: ChatCompletionResponse, messages: list[dict[str, Any]]) -> None:
    """Store the answer and the conversation including its first choice's reply."""
    reply: dict[str, Any] = {"role": "assistant", "content": body.choices[0].message.content or ""}
    calls = body.choices[0].message.tool_calls
    if calls:
        reply["tool_calls"] = [c.model_dump(exclude_none=True) for c in calls]
    store_of(state).put(body.id, owner, body.model_dump(mode="json"), [*messages, reply])


class StreamRecord:
    """A streamed answer gathered from its events, to store it once it finished."""

    def __init__(self, plan: GenerationPlan) -> None:
        self.plan = plan
        self.choices: dict[int, ChoiceResult] = {}
        self.usage: GenerationUsage | None = None

    def _choice(self, index: int) -> ChoiceResult:
        return self.choices.setdefault(index, ChoiceResult(index, "", [], None, None, 0))

    def add(self, step: StreamStep) -> None:
        for e in step.events:
            if isinstance(e, StreamFinished):
                self.usage = e.usage
            elif isinstance(e, TextDelta):
                choice = self._choice(e.index)
                choice.content = (choice.content or "") + e.text
            elif isinstance(e, ToolCallDelta):
                self._choice(e.index).tool_calls.extend(e.calls)
            elif isinstance(e, ChoiceFinished):
                self._choice(e.index).finish_reason = e.finish_reason

    def result(self) -> GenerationResult | None:
        """The whole answer, once the stream finished (None if it did not)."""
        if self.usage is None:
            return None
        return GenerationResult(self.plan, [self.choices[i] for i in sorted(self.choices)], self.usage)


def _from_response_object(body: dict[str, Any]) -> Any:
    """A ``/v1/responses`` object: its message text and function calls as one output."""
    text = "".join(part.get("text", "") for item in body.get("output", []) if item.get("type") == "message"
                   for part in item.get("content", []))
    calls = [chat_pb2.ToolCall(id=item.get("call_id", ""),
                               type=chat_pb2.ToolCallType.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
                               status=chat_pb2.ToolCallStatus.TOOL_CALL_STATUS_COMPLETED,
                               function=chat_pb2.FunctionCall(name=item.get("name", ""),
                                                              arguments=item.get("arguments", "")))
             for item in body.get("output", []) if item.get("type") == "function_call"]
    reason = "tool_calls" if calls else ("length" if body.get("status") == "incomplete" else "stop")
    usage = body.get("usage") or {}
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)
    out = chat_pb2.GetChatCompletionResponse(
        id=body.get("id", ""), model=body.get("model", ""),
        outputs=[chat_pb2.CompletionOutput(index=0, finish_reason=finish_reason(reason),
                                           message=chat_pb2.CompletionMessage(role=ASSISTANT, content=text,
                                                                              tool_calls=calls))],
        usage=sampling_usage(usage.get("input_tokens", 0), usage.get("output_tokens", 0), cached,
                             usage.get("num_sources_used")),
        citations=list(body.get("citations") or []),
    )
    out.created.FromSeconds(int(body.get("created_at", 0)))
    return out


def stored_completion(state: ServerState, response_id: str, owner: str) -> Any:
    stored = store_of(state).get(response_id, owner)
    if stored is None:
        raise not_found(response_id)
    if stored.body.get("object") == "chat.completion":
        return completion_response(ChatCompletionResponse.model_validate(stored.body))
    return _from_response_object(stored.body)


def delete(state: ServerState, response_id: str, owner: str) -> None:
    if not store_of(state).delete(response_id, owner):
        raise not_found(response_id)
