"""Tool-call grammars (required / named / auto, both formats) under random logits, parsing back
into OpenAI tool_calls, plus request validation (400-style ValueErrors naming the field)."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest
import torch
from driver import drive

from grokd.engine.structured.specs import (
    GROK1_FORMAT,
    HERMES_FORMAT,
    JsonObjectSpec,
    JsonSchemaSpec,
    ToolCallSpec,
)
from grokd.engine.structured.tool_calls import ToolCallStreamer, parse_tool_output
from grokd.engine.structured.validation import spec_from_request, validate_json_schema

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 12}, "unit": {"enum": ["c", "f"]}},
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "add",
            "parameters": {
                "type": "object",
                "properties": {
                    "a": {"type": "integer"},
                    "b": {"type": "integer", "minimum": 0, "maximum": 9},
                },
                "required": ["a", "b"],
            },
        },
    },
    {"type": "function", "function": {"name": "now"}},
]
PARAMS = {t["function"]["name"]: t["function"].get("parameters") or {"type": "object"} for t in TOOLS}
CALL_ID = re.compile(r"^call_[0-9a-f]{24}$")


def _check_calls(calls, allowed_names):
    assert calls
    for call in calls:
        assert CALL_ID.match(call["id"]) and call["type"] == "function"
        name = call["function"]["name"]
        assert name in allowed_names
        jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[name])


@pytest.mark.parametrize("fmt", [HERMES_FORMAT, GROK1_FORMAT], ids=lambda f: f.name)
@pytest.mark.parametrize("parallel", [False, True])
def test_required_calls_always_parse(backend, fmt, parallel):
    spec = spec_from_request(
        tools=TOOLS, tool_choice="required", parallel_tool_calls=parallel, tool_format=fmt
    )
    for seed in range(6):
        text, _, _ = drive(backend, spec, seed=seed, max_tokens=80)
        out = parse_tool_output(text, fmt)
        assert out.content is None and out.finish_reason == "tool_calls", text
        _check_calls(out.tool_calls, {"get_weather", "add", "now"})
        if not parallel:
            assert len(out.tool_calls) == 1


@pytest.mark.parametrize("fmt", [HERMES_FORMAT, GROK1_FORMAT], ids=lambda f: f.name)
def test_named_tool_only(backend, fmt):
    choice = {"type": "function", "function": {"name": "add"}}
    spec = spec_from_request(tools=TOOLS, tool_choice=choice, tool_format=fmt)
    assert isinstance(spec, ToolCallSpec) and spec.mode == "named"
    for seed in range(5):
        text, _, _ = drive(backend, spec, seed=seed, max_tokens=60)
        out = parse_tool_output(text, fmt)
        _check_calls(out.tool_calls, {"add"})


@pytest.mark.parametrize("fmt", [HERMES_FORMAT, GROK1_FORMAT], ids=lambda f: f.name)
def test_auto_mode_text_or_constrained_call(tiny_backend, fmt):
    spec = spec_from_request(tools=TOOLS, tool_choice="auto", tool_format=fmt)
    tok = tiny_backend.tokenizer
    # noise: free text (the trigger is unlikely), never a malformed call
    for seed in range(3):
        text, _, _ = drive(tiny_backend, spec, seed=seed, max_tokens=30)
        out = parse_tool_output(text, fmt)
        assert out.tool_calls or out.content == text
    # once the trigger is written, the rest is forced into a valid call
    prefix = "Let me look. " + fmt.trigger if fmt.trigger_anywhere else " {"
    state = tiny_backend.new_state(spec, max_tokens=80)
    forced = tiny_backend.info.ll_tokenizer.tokenize_str(prefix)
    for t in forced:
        assert state.allowed_mask(tok.vocab_size)[t]
        assert state.accept(t)
    gen = torch.Generator().manual_seed(0)
    out_ids: list[int] = []
    while not state.is_terminated() and len(out_ids) < 80 - len(forced):
        mask = state.allowed_mask(tok.vocab_size)
        logits = torch.randn(tok.vocab_size, generator=gen).masked_fill(~mask, float("-inf"))
        t = int(torch.multinomial(logits.softmax(-1), 1, generator=gen))
        if t in tok.eos_token_ids:
            break
        assert state.accept(t)
        out_ids.append(t)
    text = b"".join(tok.token_bytes(i) for i in forced + out_ids).decode()
    out = parse_tool_output(text, fmt)
    _check_calls(out.tool_calls, {"get_weather", "add", "now"})
    if fmt.trigger_anywhere:
        assert out.content == "Let me look."


def test_parse_and_stream_hermes():
    text = (
        "Checking.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    )
    out = parse_tool_output(text, HERMES_FORMAT)
    assert out.content == "Checking."
    assert [c["function"]["name"] for c in out.tool_calls] == ["get_weather", "add"]
    assert json.loads(out.tool_calls[1]["function"]["arguments"]) == {"a": 1, "b": 2}
    streamer = ToolCallStreamer(HERMES_FORMAT)
    content, calls = "", []
    for i in range(0, len(text), 5):
        c, new = streamer.feed(text[i : i + 5])
        content += c
        calls += new
    c, new = streamer.feed("", final=True)
    content += c
    calls += new
    assert content.strip() == "Checking."
    assert [c["index"] for c in calls] == [0, 1]
    assert [c["function"]["name"] for c in calls] == ["get_weather", "add"]


def test_verbatim_repeated_call_is_reported_once():
    block = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'
    other = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call>'
    calls = parse_tool_output("\n".join([block, block, other]), HERMES_FORMAT).tool_calls
    assert [json.loads(c["function"]["arguments"])["a"] for c in calls] == [1, 2]
    assert len({c["id"] for c in calls}) == 2
    streamer = ToolCallStreamer(HERMES_FORMAT)
    streamed = streamer.feed("\n".join([block, block, other]))[1] + streamer.feed("", final=True)[1]
    assert [c["index"] for c in streamed] == [0, 1]


def test_parse_plain_text_and_truncated_call():
    assert parse_tool_output("hello there", HERMES_FORMAT).tool_calls == []
    cut = '<tool_call>\n{"name": "add", "arguments": {"a": 1'
    out = parse_tool_output(cut, HERMES_FORMAT)
    assert out.tool_calls == [] and out.content == cut
    assert (
        parse_tool_output(' {"name": "now", "arguments": {}}', GROK1_FORMAT).tool_calls[0]["function"]["name"]
        == "now"
    )
    assert parse_tool_output("Sure, {not a call}", GROK1_FORMAT).tool_calls == []


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tools": [{"type": "function", "function": {"name": "has space"}}]}, "tools[0].function.name"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
        ({"tools": TOOLS + [TOOLS[0]]}, "tools[3].function.name"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]},
            "tools[0].function.parameters.type",
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"type": "nope"}}},
                        },
                    }
                ]
            },
            "tools[0].function.parameters.properties.x.type",
        ),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "missing"}}},
            "tool_choice.function.name",
        ),
        ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "x",
                        "schema": {"type": "object", "properties": {"a": {"minimum": "low"}}},
                    },
                }
            },
            "response_format.json_schema.schema.properties.a.minimum",
        ),
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}},
                }
            },
            "response_format.json_schema.schema",
        ),
    ],
)
def test_invalid_definitions_name_the_field(kwargs, field):
    with pytest.raises(ValueError) as exc:
        spec_from_request(**kwargs)
    assert str(exc.value).startswith(field + ":"), str(exc.value)


def test_response_format_specs():
    assert spec_from_request(response_format={"type": "text"}) is None
    assert isinstance(spec_from_request(response_format={"type": "json_object"}), JsonObjectSpec)
    spec = spec_from_request(
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "p", "strict": True, "schema": PARAMS["add"]},
        }
    )
    assert isinstance(spec, JsonSchemaSpec) and spec.strict and spec.name == "p"
    assert spec_from_request(tools=TOOLS, tool_choice="none") is None


def test_pydantic_schema_compiles(tiny_backend):
    import pydantic

    class Step(pydantic.BaseModel):
        explanation: str
        output: str

    class Math(pydantic.BaseModel):
        steps: list[Step]
        final_answer: str
        confidence: float | None = None

    schema = Math.model_json_schema()
    validate_json_schema(schema, "response_format.json_schema.schema")
    tiny_backend.check(JsonSchemaSpec(schema))
    text, _, _ = drive(tiny_backend, JsonSchemaSpec(schema), seed=3, max_tokens=96)
    Math.model_validate_json(text)


def test_backend_check_names_the_field(tiny_backend):
    with pytest.raises(ValueError, match=r"^response_format\.json_schema\.schema: "):
        tiny_backend.check(JsonSchemaSpec({"type": "integer", "minimum": 5, "maximum": 1}))
    with pytest.raises(ValueError, match=r"^tool_choice\.function\.name: "):
        tiny_backend.check(ToolCallSpec(tools=TOOLS, mode="named", name="missing"))
