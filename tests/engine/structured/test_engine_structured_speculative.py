"""Grammar-constrained requests with speculative drafts: a drafted token the grammar forbids is
rejected (greedy output equals the non-speculative output), and the grammar advances only over
accepted tokens (sampled output with drafts stays valid JSON; a matcher fed a rejected token would
have refused the continuation)."""

from __future__ import annotations

import json
import random

import jsonschema
from engine_helpers import Scripted, assert_idle, run_all
from structured_schemas import SCHEMAS

from grokd.engine.config import SpeculativeConfig
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.structured.specs import JsonSchemaSpec

SPEC = SpeculativeConfig(num_speculative_tokens=4, disable_acceptance_rate=0.0, plan_by_step_cost=False)


def _requests(n: int) -> list[tuple[list[int], dict]]:
    rng = random.Random(3)
    return [([rng.randrange(4, 1024) for _ in range(rng.randint(3, 10))], SCHEMAS[i % len(SCHEMAS)]) for i in range(n)]


def _run(engine, requests, temperature: float) -> list:
    for i, (prompt, schema) in enumerate(requests):
        params = SamplingParams(max_tokens=40, temperature=temperature, seed=i, structured=JsonSchemaSpec(schema))
        engine.add_request(f"s{i}", prompt, params)
    done = run_all(engine)
    return [done[f"s{i}"].outputs[0] for i in range(len(requests))]


def _engine(make_engine, tokenizer, backend, **kw):
    return make_engine(num_blocks=512, max_seqs=16, budget=512, tokenizer=tokenizer, structured_backend=backend, **kw)


def test_forbidden_drafts_are_rejected_and_greedy_output_is_unchanged(make_engine, spm1024_tokenizer, tiny_backend):
    requests = _requests(8)
    plain = _run(_engine(make_engine, spm1024_tokenizer, tiny_backend), requests, 0.0)
    # every other guess is off by one token id: mostly a token the grammar forbids at that point
    drafter = Scripted([p + o.token_ids for (p, _), o in zip(requests, plain, strict=True)], garble=2)
    eng = _engine(make_engine, spm1024_tokenizer, tiny_backend, speculative=SPEC, proposer=drafter)
    spec = _run(eng, requests, 0.0)
    assert [o.token_ids for o in spec] == [o.token_ids for o in plain]
    st = eng.stats()
    assert 0 < st.spec_accepted_tokens_total < st.spec_draft_tokens_total
    assert_idle(eng)


def test_sampled_output_with_drafts_follows_the_grammar(make_engine, spm1024_tokenizer, tiny_backend):
    requests = _requests(8)
    plain = _run(_engine(make_engine, spm1024_tokenizer, tiny_backend), requests, 1.0)
    drafter = Scripted([p + o.token_ids for (p, _), o in zip(requests, plain, strict=True)], garble=3)
    eng = _engine(make_engine, spm1024_tokenizer, tiny_backend, speculative=SPEC, proposer=drafter)
    for (_, schema), out in zip(requests, _run(eng, requests, 1.0), strict=True):
        assert out.finish_reason == "stop"  # the grammar closes within max_tokens
        jsonschema.validate(json.loads(out.text), schema)
    assert eng.stats().spec_draft_tokens_total > 0
    assert_idle(eng)
