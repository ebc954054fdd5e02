"""``server.grpc.responses``: chat results as xAI's protobuf responses, and a stream's events as
chunks that xai-sdk accumulates into the same response."""

from __future__ import annotations

from xai_sdk.chat import Response
from xai_sdk.proto import chat_pb2

from grokd.server.generation.types import (
    ChoiceFinished,
    GenerationUsage,
    StreamFinished,
    StreamStep,
    TextDelta,
    TokenLogprobOutput,
    ToolCallDelta,
    ToolCallOutput,
    TopToken,
)
from grokd.server.grpc.responses import ChunkWriter, completion_response
from grokd.server.protocol import (
    ChatChoice,
    ChatCompletionResponse,
    ChatResponseMessage,
    FunctionCall,
    PromptTokensDetails,
    ToolCall,
    Usage,
)


def test_completion_response_fields() -> None:
    body = ChatCompletionResponse(
        id="chatcmpl-1", created=1700000000, model="m", system_fingerprint="fp_1", citations=["https://a"],
        usage=Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10,
                    prompt_tokens_details=PromptTokensDetails(cached_tokens=4)),
        choices=[ChatChoice(index=0, message=ChatResponseMessage(content="Hi"), finish_reason="length"),
                 ChatChoice(index=1, finish_reason="tool_calls", message=ChatResponseMessage(
                     content=None, tool_calls=[ToolCall(id="c1", function=FunctionCall(name="f", arguments="{}"))]))],
    )
    pb = completion_response(body)
    first, second = Response(pb, 0), Response(pb, 1)
    assert first.content == "Hi" and first.finish_reason == "REASON_MAX_LEN" and first.role == "ROLE_ASSISTANT"
    assert second.finish_reason == "REASON_TOOL_CALLS" and second.tool_calls[0].function.name == "f"
    assert second.tool_calls[0].id == "c1"
    assert pb.usage.prompt_tokens == 7 and pb.usage.completion_tokens == 3 and pb.usage.total_tokens == 10
    assert pb.usage.cached_prompt_text_tokens == 4 and pb.usage.prompt_text_tokens == 7
    assert pb.usage.reasoning_tokens == 0 and list(pb.citations) == ["https://a"]
    assert pb.system_fingerprint == "fp_1" and pb.created.seconds == 1700000000


def test_chunks_accumulate_in_the_sdk_to_the_whole_answer() -> None:
    writer = ChunkWriter("chatcmpl-2", "m", "fp_2", 1700000000, ["https://b"])
    lp = TokenLogprobOutput("He", -0.5, list(b"He"), [TopToken("He", -0.5, list(b"He"))])
    steps = [
        StreamStep([TextDelta(0, "He", [lp]), TextDelta(1, "", None)]),
        StreamStep([TextDelta(0, "llo"), ChoiceFinished(0, "stop"),
                    ToolCallDelta(1, [ToolCallOutput("c9", "f", '{"a":1}')]), ChoiceFinished(1, "tool_calls")]),
        StreamStep([StreamFinished(GenerationUsage(5, 4, 0, None))]),
    ]
    chunks = [c for s in steps for c in writer.step(s)]
    assert all(len(c.outputs) <= 1 for c in chunks)
    assert all(o.delta.role == chat_pb2.MessageRole.ROLE_ASSISTANT for c in chunks for o in c.outputs)
    acc = Response(chat_pb2.GetChatCompletionResponse(), 0)
    for c in chunks:
        acc.process_chunk(c)
    assert acc.content == "Hello" and acc.finish_reason == "REASON_STOP"
    other = Response(acc.proto, 1)
    assert other.finish_reason == "REASON_TOOL_CALLS" and other.tool_calls[0].function.arguments == '{"a":1}'
    assert acc.usage.total_tokens == 9 and list(acc.citations) == ["https://b"] and acc.id == "chatcmpl-2"
    (lp_out,) = chunks[0].outputs[0].logprobs.content
    assert lp_out.token == "He" and lp_out.bytes == b"He" and lp_out.top_logprobs[0].logprob == -0.5
