"""The same guarantees on the default model's byte-level BPE vocabulary (SmolLM2, 49k ids)."""

from __future__ import annotations

import json

import jsonschema
from driver import drive
from structured_schemas import SCHEMAS
from test_tool_calls import PARAMS, TOOLS

from grokd.engine.structured.specs import HERMES_FORMAT, JsonSchemaSpec
from grokd.engine.structured.tool_calls import parse_tool_output
from grokd.engine.structured.validation import spec_from_request


def test_schemas_validate_on_smollm2_vocab(smollm2_backend):
    for i, schema in enumerate(SCHEMAS):
        text, _, _ = drive(smollm2_backend, JsonSchemaSpec(schema), seed=i, max_tokens=64)
        jsonschema.validate(json.loads(text), schema)


def test_special_tokens_never_leak_into_json(smollm2_backend):
    tok = smollm2_backend.tokenizer
    specials = [i for i in range(tok.vocab_size) if tok.is_special(i) and i not in tok.eos_token_ids]
    assert specials
    state = smollm2_backend.new_state(JsonSchemaSpec(SCHEMAS[0]))
    assert not state.allowed_mask(tok.vocab_size)[specials].any()


def test_required_tool_call_on_smollm2_vocab(smollm2_backend):
    spec = spec_from_request(tools=TOOLS, tool_choice="required", tool_format=HERMES_FORMAT)
    for seed in range(3):
        text, _, _ = drive(smollm2_backend, spec, seed=seed, max_tokens=80)
        calls = parse_tool_output(text, HERMES_FORMAT).tool_calls
        assert calls
        for call in calls:
            jsonschema.validate(json.loads(call["function"]["arguments"]), PARAMS[call["function"]["name"]])
