"""Chat results → xAI's protobuf responses.

A whole completion is first the HTTP chat.completion object (``routes.chat.completion_body``,
or the JSON a deferred request stored) and then one ``GetChatCompletionResponse``, so every
path to an answer goes through one mapping. A stream becomes ``GetChatCompletionChunk``s, one per
choice per engine step, each carrying the assistant role (xai-sdk copies the role of every chunk
into the accumulated response) and the finish reason on the choice's last chunk; usage and
citations ride on the final chunk, after every choice finished.
"""

from __future__ import annotations

from typing import Any

from grokd.server.generation.types import (
    ChoiceFinished,
    GenerationUsage,
    StreamFinished,
    StreamStep,
    TextDelta,
    TokenLogprobOutput,
    ToolCallDelta,
    ToolCallOutput,
)
from grokd.server.grpc.proto import chat_pb2, sample_pb2, usage_pb2
from grokd.server.protocol import ChatCompletionResponse, ChoiceLogprobs, ToolCall, Usage

FINISH_REASONS: dict[str, int] = {
    "stop": sample_pb2.FinishReason.REASON_STOP,
    "length": sample_pb2.FinishReason.REASON_MAX_LEN,
    "tool_calls": sample_pb2.FinishReason.REASON_TOOL_CALLS,
}
ASSISTANT = chat_pb2.MessageRole.ROLE_ASSISTANT


def finish_reason(reason: str | None) -> int:
    return FINISH_REASONS.get(reason or "", sample_pb2.FinishReason.REASON_INVALID)


def sampling_usage(prompt: int, completion: int, cached: int, sources: int | None) -> Any:
    """xAI's usage: every prompt token is a text token; grokd's models do no reasoning."""
    return usage_pb2.SamplingUsage(
        prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        prompt_text_tokens=prompt, cached_prompt_text_tokens=cached, reasoning_tokens=0,
        num_sources_used=sources or 0,
    )


def usage_of_chat(u: Usage) -> Any:
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details is not None else 0
    return sampling_usage(u.prompt_tokens, u.completion_tokens, cached, u.num_sources_used)


def usage_of_generation(u: GenerationUsage) -> Any:
    return sampling_usage(u.prompt_tokens, u.completion_tokens, u.cached_tokens, u.sources_used)


def _tool_call(call_id: str | None, name: str, arguments: str) -> Any:
    return chat_pb2.ToolCall(id=call_id or "", type=chat_pb2.ToolCallType.TOOL_CALL_TYPE_CLIENT_SIDE_TOOL,
                             status=chat_pb2.ToolCallStatus.TOOL_CALL_STATUS_COMPLETED,
                             function=chat_pb2.FunctionCall(name=name, arguments=arguments))


def _chat_tool_calls(calls: list[ToolCall] | None) -> list[Any]:
    return [_tool_call(c.id, c.function.name, c.function.arguments) for c in calls or []]


def _chat_logprobs(lps: ChoiceLogprobs | None) -> Any:
    return chat_pb2.LogProbs(content=[
        chat_pb2.LogProb(token=lp.token, logprob=lp.logprob, bytes=bytes(lp.bytes or []),
                         top_logprobs=[chat_pb2.TopLogProb(token=t.token, logprob=t.logprob, bytes=bytes(t.bytes or []))
                                       for t in lp.top_logprobs])
        for lp in (lps.content or [] if lps is not None else [])
    ])


def completion_response(body: ChatCompletionResponse) -> Any:
    """A chat.completion object as ``GetChatCompletionResponse``."""
    out = chat_pb2.GetChatCompletionResponse(
        id=body.id, model=body.model, system_fingerprint=body.system_fingerprint or "",
        usage=usage_of_chat(body.usage), citations=list(body.citations or []),
        outputs=[chat_pb2.CompletionOutput(
            index=c.index,
            finish_reason=finish_reason(c.finish_reason),
            message=chat_pb2.CompletionMessage(role=ASSISTANT, content=c.message.content or "",
                                               tool_calls=_chat_tool_calls(c.message.tool_calls)),
            logprobs=_chat_logprobs(c.logprobs) if c.logprobs is not None else None,
        ) for c in body.choices],
    )
    out.created.FromSeconds(body.created)
    return out


def _logprobs(lps: list[TokenLogprobOutput]) -> Any:
    return chat_pb2.LogProbs(content=[
        chat_pb2.LogProb(token=lp.token, logprob=lp.logprob, bytes=bytes(lp.bytes),
                         top_logprobs=[chat_pb2.TopLogProb(token=t.token, logprob=t.logprob, bytes=bytes(t.bytes))
                                       for t in lp.top])
        for lp in lps
    ])


def _stream_calls(calls: list[ToolCallOutput]) -> list[Any]:
    return [_tool_call(c.id, c.name, c.arguments) for c in calls]


class ChunkWriter:
    """``GetChatCompletionChunk``s of one streamed request (id, model and fingerprint on each)."""

    def __init__(self, request_id: str, model: str, system_fingerprint: str, created: int,
                 citations: list[str] | None) -> None:
        self.request_id, self.model, self.system_fingerprint = request_id, model, system_fingerprint
        self.created = created
        self.citations = citations

    def _chunk(self, outputs: list[Any]) -> Any:
        out = chat_pb2.GetChatCompletionChunk(id=self.request_id, model=self.model,
                                              system_fingerprint=self.system_fingerprint, outputs=outputs)
        out.created.FromSeconds(self.created)
        return out

    def step(self, step: StreamStep) -> list[Any]:
        """The chunks of one engine step: one per choice that has news, then the usage chunk."""
        by_choice: dict[int, Any] = {}
        out: list[Any] = []
        for e in step.events:
            if isinstance(e, StreamFinished):
                last = self._chunk([])
                last.usage.CopyFrom(usage_of_generation(e.usage))
                last.citations.extend(self.citations or [])
                out.append(last)
                continue
            chunk = by_choice.get(e.index)
            if chunk is None:
                chunk = by_choice[e.index] = chat_pb2.CompletionOutputChunk(
                    index=e.index, delta=chat_pb2.Delta(role=ASSISTANT))
            if isinstance(e, TextDelta):
                chunk.delta.content += e.text
                if e.logprobs is not None:
                    chunk.logprobs.content.extend(_logprobs(e.logprobs).content)
            elif isinstance(e, ToolCallDelta):
                chunk.delta.tool_calls.extend(_stream_calls(e.calls))
            elif isinstance(e, ChoiceFinished):
                chunk.finish_reason = finish_reason(e.finish_reason)
        choices = [self._chunk([c]) for c in by_choice.values()]
        return [*choices, *out]
