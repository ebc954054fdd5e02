"""``server.grpc.requests``: a GetCompletionsRequest becomes the chat body it means, validated by
the HTTP route's own model (so the same values are refused with the same messages)."""

from __future__ import annotations

import json

import pytest
from xai_sdk.chat import assistant, image, system, tool, tool_result, user
from xai_sdk.proto import chat_pb2

from grokd.server.errors import APIError
from grokd.server.grpc.requests import chat_body, to_chat_request


def _request(**fields) -> chat_pb2.GetCompletionsRequest:
    return chat_pb2.GetCompletionsRequest(model="m", messages=[system("Be brief."), user("Hi")], **fields)


def test_unset_optional_fields_stay_out_of_the_body() -> None:
    body = chat_body(_request())
    assert body == {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "Hi"}]}
    _, req = to_chat_request(_request())
    assert req.n == 1 and req.max_tokens is None and req.temperature is None


def test_sampling_fields_and_zero_values_that_were_set() -> None:
    body = chat_body(_request(n=2, max_tokens=5, seed=0, temperature=0.0, top_p=0.5, stop=["\n"], logprobs=True,
                              top_logprobs=3, frequency_penalty=0.1, presence_penalty=0.0, user="u1"))
    assert body["n"] == 2 and body["max_tokens"] == 5 and body["seed"] == 0 and body["temperature"] == 0.0
    assert body["top_p"] == 0.5 and body["stop"] == ["\n"] and body["logprobs"] is True
    assert body["top_logprobs"] == 3 and body["presence_penalty"] == 0.0 and body["user"] == "u1"


def test_tools_tool_choice_and_a_tool_result_turn() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    call = chat_pb2.ToolCall(id="call_1", function=chat_pb2.FunctionCall(name="w", arguments='{"city":"P"}'))
    history = [user("Weather?"), chat_pb2.Message(role=chat_pb2.MessageRole.ROLE_ASSISTANT, tool_calls=[call]),
               tool_result("18C", tool_call_id="call_1")]
    req = chat_pb2.GetCompletionsRequest(model="m", messages=history, tools=[tool("w", "weather", schema)],
                                         tool_choice=chat_pb2.ToolChoice(function_name="w"), parallel_tool_calls=False)
    body = chat_body(req)
    assert body["tools"] == [{"type": "function", "function": {"name": "w", "description": "weather",
                                                               "parameters": schema}}]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert body["parallel_tool_calls"] is False
    assert body["messages"][1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "w", "arguments": '{"city":"P"}'}}]}
    assert body["messages"][2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
    modes = chat_pb2.ToolChoice(mode=chat_pb2.ToolMode.TOOL_MODE_REQUIRED)
    assert chat_body(_request(tool_choice=modes))["tool_choice"] == "required"


def test_response_format_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = chat_pb2.ResponseFormat(format_type=chat_pb2.FormatType.FORMAT_TYPE_JSON_SCHEMA, schema=json.dumps(schema))
    _, req = to_chat_request(_request(response_format=fmt))
    assert req.response_format is not None and req.response_format.type == "json_schema"
    assert req.response_format.json_schema is not None and req.response_format.json_schema.schema_ == schema


@pytest.mark.parametrize(("req", "param", "words"), [
    (_request(tools=[chat_pb2.Tool(web_search=chat_pb2.WebSearch())]), "tools[0]", "web_search"),
    (_request(tools=[chat_pb2.Tool(function=chat_pb2.Function(name="f", parameters="{not json"))]),
     "tools[0].function.parameters", "not valid JSON"),
    (_request(response_format=chat_pb2.ResponseFormat(format_type=chat_pb2.FormatType.FORMAT_TYPE_JSON_SCHEMA)),
     "response_format", "schema"),
    (chat_pb2.GetCompletionsRequest(model="m", messages=[chat_pb2.Message(content=[chat_pb2.Content(text="x")])]),
     "messages[0].role", "must be set"),
    (_request(use_encrypted_content=True), "use_encrypted_content", "not supported"),
    (_request(agent_count=chat_pb2.AgentCount.AGENT_COUNT_4), "agent_count", "not supported"),
])
def test_refused_with_the_field_named(req, param: str, words: str) -> None:
    with pytest.raises(APIError) as exc:
        to_chat_request(req)
    assert exc.value.status == 400 and exc.value.param == param and words in exc.value.message


def test_validation_errors_are_the_http_routes() -> None:
    with pytest.raises(APIError) as exc:
        to_chat_request(_request(temperature=3.0))
    assert exc.value.status == 400 and exc.value.param == "temperature"
    assert exc.value.message.startswith("temperature: ")
    with pytest.raises(APIError) as exc:
        to_chat_request(chat_pb2.GetCompletionsRequest(model="m"))
    assert exc.value.param == "messages"


def test_image_parts_reach_the_chat_route_as_image_parts_and_reasoning_effort_as_on_http() -> None:
    body = chat_body(chat_pb2.GetCompletionsRequest(model="m", messages=[user("look", image("http://x/i.png"))]))
    assert body["messages"][0]["content"] == [{"type": "text", "text": "look"},
                                              {"type": "image_url", "image_url": {"url": "http://x/i.png"}}]
    body = chat_body(_request(reasoning_effort=chat_pb2.ReasoningEffort.EFFORT_LOW))
    assert body["reasoning_effort"] == "low"  # the chat route refuses it with its own 400
    assert chat_body(chat_pb2.GetCompletionsRequest(model="m", messages=[assistant("a", "b")]))["messages"] == [
        {"role": "assistant", "content": "ab"}]


def test_search_parameters_become_live_search_settings() -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    start = Timestamp()
    start.FromJsonString("2026-01-02T00:00:00Z")
    sp = chat_pb2.SearchParameters(
        mode=chat_pb2.SearchMode.ON_SEARCH_MODE, return_citations=True, max_search_results=5, from_date=start,
        sources=[chat_pb2.Source(web=chat_pb2.WebSource(allowed_websites=["a.org"])),
                 chat_pb2.Source(rss=chat_pb2.RssSource(links=["https://a.org/feed"]))])
    _, req = to_chat_request(_request(search_parameters=sp))
    live = req.search_parameters
    assert live is not None and live.mode == "on" and live.max_search_results == 5 and live.from_date == "2026-01-02"
    assert [s.type for s in live.sources or []] == ["web", "rss"]
    assert (live.sources or [])[0].model_extra == {"allowed_websites": ["a.org"]}
