"""Noise in, valid JSON out, through the real engine: the random-weight grok1-tiny model with a
real vocab-1024 SentencePiece tokenizer, batched, temperature 1: 200 json_schema requests over 20
schemas, 200 tool_choice=required and 200 named-tool requests over 20 tools with those schemas."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from engine_helpers import assert_idle, run_all
from structured_schemas import SCHEMAS
from test_tool_calls import PARAMS, TOOLS

from grokd.engine.sampling_params import SamplingParams
from grokd.engine.structured.specs import GROK1_FORMAT, HERMES_FORMAT, JsonSchemaSpec
from grokd.engine.structured.tool_calls import parse_tool_output
from grokd.engine.structured.validation import spec_from_request


@pytest.fixture
def engine(make_engine, spm1024_tokenizer, tiny_backend):
    return make_engine(
        num_blocks=2048,
        max_seqs=64,
        budget=1024,
        tokenizer=spm1024_tokenizer,
        structured_backend=tiny_backend,
    )


def _prompts(n: int, rng: random.Random) -> list[list[int]]:
    return [[rng.randrange(4, 1024) for _ in range(rng.randint(3, 12))] for _ in range(n)]


def test_200_json_schema_requests_all_validate(engine):
    rng = random.Random(7)
    prompts = _prompts(200, rng)
    schema_of = {}
    for i, prompt in enumerate(prompts):
        schema = SCHEMAS[i % len(SCHEMAS)]
        params = SamplingParams(max_tokens=48, temperature=1.0, seed=i, structured=JsonSchemaSpec(schema))
        schema_of[engine.add_request(f"s{i}", prompt, params)] = schema
    done = run_all(engine)
    assert len(done) == 200
    for rid, out in done.items():
        comp = out.outputs[0]
        assert len(comp.token_ids) <= 48
        jsonschema.validate(json.loads(comp.text), schema_of[rid])
    assert_idle(engine)


SCHEMA_TOOLS = [
    {"type": "function", "function": {"name": f"tool_{i}", "parameters": s}} for i, s in enumerate(SCHEMAS)
]


@pytest.mark.parametrize("mode", ["required", "named"])
def test_200_tool_call_requests_all_validate(engine, mode):
    """20 tools whose parameters are the 20 schemas; ``required`` picks among all of them,
    ``named`` forces tool i % 20. Every reply parses into tool_calls with valid arguments."""
    rng = random.Random(11 if mode == "required" else 13)
    wanted = {}
    for i, prompt in enumerate(_prompts(200, rng)):
        name = f"tool_{i % len(SCHEMAS)}"
        choice = "required" if mode == "required" else {"type": "function", "function": {"name": name}}
        spec = spec_from_request(
            tools=SCHEMA_TOOLS, tool_choice=choice, parallel_tool_calls=False, tool_format=GROK1_FORMAT
        )
        rid = engine.add_request(
            f"{mode}{i}", prompt, SamplingParams(max_tokens=64, temperature=1.0, seed=i, structured=spec)
        )
        wanted[rid] = None if mode == "required" else name
    done = run_all(engine)
    assert len(done) == 200
    for rid, out in done.items():
        parsed = parse_tool_output(out.outputs[0].text, GROK1_FORMAT)
        assert parsed.finish_reason == "tool_calls" and len(parsed.tool_calls) == 1, out.outputs[0].text
        fn = parsed.tool_calls[0]["function"]
        assert wanted[rid] in (None, fn["name"])
        jsonschema.validate(json.loads(fn["arguments"]), SCHEMAS[int(fn["name"].split("_")[1])])
    assert_idle(engine)


def test_hermes_tool_calls_through_engine(engine):
    spec = spec_from_request(tools=TOOLS, tool_choice="required", tool_format=HERMES_FORMAT)
    for i, prompt in enumerate(_prompts(20, random.Random(5))):
        engine.add_request(
            f"h{i}", prompt, SamplingParams(max_tokens=96, temperature=1.0, seed=i, structured=spec)
        )
    for out in run_all(engine).values():
        calls = parse_tool_output(out.outputs[0].text, HERMES_FORMAT).tool_calls
        assert calls, out.outputs[0].text
        for call in calls:
            jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[call["function"]["name"]])
