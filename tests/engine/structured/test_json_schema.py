"""JSON schema / JSON object constraints: noise in, valid JSON out, on two real tokenizers."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch
from driver import drive
from structured_schemas import SCHEMAS

from grokd.engine.structured.specs import JsonObjectSpec, JsonSchemaSpec
from grokd.engine.structured.state import batch_allowed_masks


def test_all_schemas_compile(backend):
    for i, schema in enumerate(SCHEMAS):
        backend.check(JsonSchemaSpec(schema))
        assert backend.new_state(JsonSchemaSpec(schema)).allowed_mask(backend.tokenizer.vocab_size).any(), i


def test_compile_cache_hits(tiny_backend):
    spec = JsonSchemaSpec({"type": "object", "properties": {"zz_cache": {"type": "integer"}}})
    tiny_backend.check(spec)
    hits = tiny_backend.hits
    tiny_backend.new_state(JsonSchemaSpec(dict(spec.schema)))
    assert tiny_backend.hits == hits + 1


@pytest.mark.parametrize("seed", [0, 1])
def test_random_logits_always_validate(backend, seed):
    for i, schema in enumerate(SCHEMAS):
        text, _, state = drive(backend, JsonSchemaSpec(schema), seed=seed * 100 + i, max_tokens=64)
        doc = json.loads(text)
        jsonschema.validate(doc, schema)
        assert state.is_terminated(), (i, text)


@pytest.mark.parametrize("max_tokens", [24, 40, 200])
def test_budget_finishes_before_max_tokens(tiny_backend, max_tokens):
    schema = SCHEMAS[15]  # nested order with free strings: noise never closes them by itself
    for seed in range(5):
        text, ids, _ = drive(tiny_backend, JsonSchemaSpec(schema), seed=seed, max_tokens=max_tokens)
        assert len(ids) <= max_tokens
        jsonschema.validate(json.loads(text), schema)


def test_json_object_mode(backend):
    for seed in range(4):
        text, _, _ = drive(backend, JsonObjectSpec(), seed=seed, max_tokens=48)
        assert isinstance(json.loads(text), dict)


def test_wrong_token_enters_error_state(tiny_backend):
    state = tiny_backend.new_state(JsonObjectSpec())
    tok = tiny_backend.tokenizer
    bad = tok.encode("x")[-1]
    assert not state.allowed_mask(tok.vocab_size)[bad]
    assert state.accept(bad) is False
    assert state.is_terminated()
    mask = state.allowed_mask(tok.vocab_size)
    assert mask.nonzero().flatten().tolist() == tok.eos_token_ids


def test_mask_wider_than_vocab(tiny_backend):
    """Model heads padded past the tokenizer's vocabulary never get the padding ids."""
    state = tiny_backend.new_state(JsonObjectSpec())
    mask = state.allowed_mask(tiny_backend.tokenizer.vocab_size + 64)
    assert mask.shape[0] == tiny_backend.tokenizer.vocab_size + 64
    assert not mask[tiny_backend.tokenizer.vocab_size :].any()


def test_batch_masks_match_single(tiny_backend):
    specs = [JsonSchemaSpec(s) for s in SCHEMAS[:6]]
    states = [tiny_backend.new_state(s) for s in specs] + [None]
    vocab = tiny_backend.tokenizer.vocab_size
    batch = tiny_backend.batch_allowed_masks(states, vocab)
    for i in range(len(specs)):
        assert torch.equal(batch[i], tiny_backend.new_state(specs[i]).allowed_mask(vocab)), i
    assert batch[-1].all()
    assert torch.equal(batch_allowed_masks(states, vocab), batch)  # the states' own executor
