"""Noise in, valid JSON out, through the real engine: the random-weight grok1-tiny model with a
real vocab-1024 SentencePiece tokenizer, 200 json_schema requests over 20 schemas plus tool
calls (required / named), batched, temperature 1."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
from engine_helpers import assert_idle, run_all
from structured_schemas import SCHEMAS
from test_tool_calls import PARAMS, TOOLS

from engine.sampling_params import SamplingParams
from engine.structured.specs import GROK1_FORMAT, JsonSchemaSpec
from engine.structured.tool_calls import parse_tool_output
from engine.structured.validation import spec_from_request


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


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_calls_through_engine(engine, choice):
    rng = random.Random(11)
    spec = spec_from_request(tools=TOOLS, tool_choice=choice, tool_format=GROK1_FORMAT)
    for i, prompt in enumerate(_prompts(40, rng)):
        engine.add_request(
            f"t{i}", prompt, SamplingParams(max_tokens=64, temperature=1.0, seed=i, structured=spec)
        )
    done = run_all(engine)
    assert len(done) == 40
    for out in done.values():
        parsed = parse_tool_output(out.outputs[0].text, GROK1_FORMAT)
        assert parsed.tool_calls, out.outputs[0].text
        for call in parsed.tool_calls:
            name = call["function"]["name"]
            assert choice == "required" or name == "get_weather"
            jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[name])
