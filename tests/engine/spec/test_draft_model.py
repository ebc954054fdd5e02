"""Drafting with a model: the grok1-tiny fixture drafting for itself (its greedy drafts are then
the target's own greedy tokens: all accepted, output the golden reference), sampled requests
through the same rejection sampler, every block of both engines given back, and a draft whose
tokenizer differs refused by name."""

from __future__ import annotations

import pytest
from engine_helpers import FirstK, assert_idle

from grokd.engine.config import SpeculativeConfig
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.spec.draft_model import DraftModelProposer, check_same_tokenizer

VOCAB = 1024
SPEC = SpeculativeConfig(method="draft_model", model="grok1-tiny", num_speculative_tokens=4,
                         plan_by_step_cost=False)


def generate(engine, prompts, params) -> list:
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    done: dict = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    return [done[f"r{i}"] for i in range(len(prompts))]


def test_self_drafting_reproduces_the_golden_reference_with_every_draft_accepted(make_engine, grok1_tiny_reference):
    cases = grok1_tiny_reference["fp32"]["single"]
    drafter = DraftModelProposer(make_engine(block_size=4, num_blocks=256), 4, VOCAB)
    eng = make_engine(speculative=SPEC, proposer=drafter)
    outs = generate(eng, [c["prompt"] for c in cases], SamplingParams(temperature=0, max_tokens=8))
    for case, out in zip(cases, outs, strict=True):
        assert out.outputs[0].token_ids == case["greedy"]
    st = eng.stats()
    assert st.spec_draft_tokens_total > 0 and st.spec_accepted_tokens_total == st.spec_draft_tokens_total
    assert st.spec_emitted_tokens_total >= 2 * st.spec_verify_steps_total
    assert_idle(eng)
    assert_idle(drafter.engine)  # the drafter's requests all ended; its cache holds only reusable blocks


def test_seeded_sampled_requests_repeat_run_to_run_with_model_drafts(make_engine):
    prompts = [[(5 * i + 3 * j + 2) % VOCAB for j in range(n)] for i, n in enumerate([6, 17, 11])]
    params = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, seed=1234)
    runs = []
    for _ in range(2):
        drafter = DraftModelProposer(make_engine(), 3, VOCAB)
        eng = make_engine(speculative=SPEC, proposer=drafter)
        runs.append([o.outputs[0].token_ids for o in generate(eng, prompts, params)])
        assert eng.stats().spec_draft_tokens_total > 0
        assert_idle(eng)
    assert runs[0] == runs[1] and all(len(r) == 12 for r in runs[0])


def test_a_draft_with_another_tokenizer_is_refused_by_name(tiny_tokenizer, smollm2_gguf):
    from grokd.engine.config import ModelLoadConfig
    from grokd.engine.loader import load_model_and_tokenizer

    _, smollm2_tok, _ = load_model_and_tokenizer(ModelLoadConfig(model=str(smollm2_gguf)))
    with pytest.raises(ValueError, match=r"has 49152 tokens, the target's 1024.*share the target's tokenizer"):
        check_same_tokenizer(smollm2_tok, tiny_tokenizer, str(smollm2_gguf))
    with pytest.raises(ValueError, match=r"token \d+ is"):
        check_same_tokenizer(FirstK(smollm2_tok, 1024), tiny_tokenizer, "draft")
    with pytest.raises(ValueError, match="needs a tokenizer"):
        check_same_tokenizer(None, tiny_tokenizer, "draft")
    check_same_tokenizer(tiny_tokenizer, tiny_tokenizer, "draft")  # the same one passes


def test_an_engine_with_a_mismatched_draft_model_does_not_start(make_engine, tiny_tokenizer, smollm2_gguf):
    spec = SpeculativeConfig(method="draft_model", model=str(smollm2_gguf), num_speculative_tokens=2)
    with pytest.raises(ValueError, match="speculative_config.model: .*share the target's tokenizer"):
        make_engine(speculative=spec, tokenizer=tiny_tokenizer)
