"""Speculative decoding through the engine on the grok1-tiny fixture: greedy output is the
non-speculative one token for token (golden reference included) with drafts accepted, cut short and
rejected, in mixed batches with chunked prefill, preemption and the int8 pool; stop conditions cut
inside a draft; seeded sampling repeats; blocks all come back after rejections and aborts.

The tiny model's random weights seldom continue n-grams, so most tests draft with ``Scripted``: a
drafter that knows the continuation and garbles a chosen share of its guesses (the n-gram drafter
itself is exercised on the default model, test_default_model_speculative)."""

from __future__ import annotations

import pytest
from engine_helpers import Scripted, assert_idle, run_all

from grokd.engine.config import SpeculativeConfig
from grokd.engine.sampling_params import SamplingParams

VOCAB = 1024
SPEC = SpeculativeConfig(num_speculative_tokens=4, disable_acceptance_rate=0.0, plan_by_step_cost=False)


def generate(engine, prompts, params, stagger: int = 0) -> list:
    """Outputs in prompt order; with ``stagger``, request ``i`` arrives after ``i * stagger`` steps."""
    done: dict = {}
    pending = list(enumerate(prompts))
    steps = 0
    while pending or engine.has_unfinished():
        while pending and steps >= pending[0][0] * stagger:
            i, p = pending.pop(0)
            engine.add_request(f"r{i}", p, params)
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
        steps += 1
    return [done[f"r{i}"] for i in range(len(prompts))]


def test_greedy_is_the_golden_reference_with_drafts_accepted_and_rejected(make_engine, grok1_tiny_reference):
    cases = grok1_tiny_reference["fp32"]["single"]
    drafter = Scripted([c["prompt"] + c["greedy"] for c in cases])
    eng = make_engine(speculative=SPEC, proposer=drafter)
    outs = generate(eng, [c["prompt"] for c in cases], SamplingParams(temperature=0, max_tokens=8, logprobs=1))
    for case, out in zip(cases, outs, strict=True):
        assert out.outputs[0].token_ids == case["greedy"]
        assert len(out.outputs[0].logprobs) == 8
    st = eng.stats()
    assert 0 < st.spec_accepted_tokens_total < st.spec_draft_tokens_total
    assert st.spec_emitted_tokens_total > st.spec_verify_steps_total  # more than one token per step
    assert_idle(eng)


def _prompts() -> list[list[int]]:
    lengths = [5, 23, 9, 40, 14, 31]
    return [[(7 * i + 13 * j + 1) % VOCAB for j in range(n)] for i, n in enumerate(lengths)]


@pytest.mark.parametrize(("kv_dtype", "num_blocks"), [("auto", 256), ("int8", 256), ("auto", 40)])
def test_mixed_batch_matches_plain_decoding(make_engine, kv_dtype, num_blocks):
    """Staggered arrivals under a 16-token budget: prefill chunks share steps with drafted and
    undrafted decodes (the drafter knows only every other request); 40 blocks of 4 force preemption."""
    prompts = _prompts()
    params = SamplingParams(temperature=0, max_tokens=24)

    base = generate(make_engine(num_blocks=num_blocks, budget=16, max_seqs=6, kv_cache_dtype=kv_dtype),
                    prompts, params, stagger=2)
    known = [p + o.outputs[0].token_ids for i, (p, o) in enumerate(zip(prompts, base, strict=True)) if i % 2 == 0]
    eng = make_engine(num_blocks=num_blocks, budget=16, max_seqs=6, kv_cache_dtype=kv_dtype,
                      speculative=SPEC, proposer=Scripted(known))
    outs = generate(eng, prompts, params, stagger=2)
    assert [o.outputs[0].token_ids for o in outs] == [o.outputs[0].token_ids for o in base]
    st = eng.stats()
    assert st.spec_accepted_tokens_total > 0 and st.spec_draft_tokens_total > st.spec_accepted_tokens_total
    if num_blocks == 40:
        assert eng.scheduler.num_preempted_total > 0
    assert_idle(eng)


def test_stop_token_and_stop_string_cut_inside_a_draft(make_engine, tiny_tokenizer):
    prompt = _prompts()[3]
    params = SamplingParams(temperature=0, max_tokens=20)
    plain = generate(make_engine(tokenizer=tiny_tokenizer), [prompt], params)[0].outputs[0]
    drafter = Scripted([prompt + plain.token_ids], k=6, garble=10**9)  # every guess right
    stop_tok = plain.token_ids[7]
    cut = len(tiny_tokenizer.decode(plain.token_ids[:9]))
    stop_str = plain.text[cut - 2 : cut + 1]
    assert len(stop_str) == 3
    for p in (SamplingParams(temperature=0, max_tokens=20, stop_token_ids=[stop_tok]),
              SamplingParams(temperature=0, max_tokens=20, stop=[stop_str]),
              SamplingParams(temperature=0, max_tokens=10)):
        want = generate(make_engine(tokenizer=tiny_tokenizer), [prompt], p)[0].outputs[0]
        eng = make_engine(tokenizer=tiny_tokenizer, speculative=SPEC, proposer=drafter)
        got = generate(eng, [prompt], p)[0].outputs[0]
        assert (got.token_ids, got.text, got.finish_reason, got.stop_reason) == (
            want.token_ids, want.text, want.finish_reason, want.stop_reason)
        assert eng.stats().spec_accepted_tokens_total > 0
        assert_idle(eng)
    assert drafter.longest <= 6


def test_no_draft_reaches_past_max_tokens(make_engine):
    prompt = _prompts()[1]
    plain = generate(make_engine(), [prompt], SamplingParams(temperature=0, max_tokens=30))[0].outputs[0]
    drafter = Scripted([prompt + plain.token_ids], k=8, garble=10**9)
    eng = make_engine(speculative=SpeculativeConfig(num_speculative_tokens=8, plan_by_step_cost=False), proposer=drafter)
    got = generate(eng, [prompt], SamplingParams(temperature=0, max_tokens=6))[0].outputs[0]
    assert got.token_ids == plain.token_ids[:6] and got.finish_reason == "length"
    # the step after the first token drafts at most the 4 tokens that leave room for the bonus one
    assert eng.stats().spec_draft_tokens_total == 4 and eng.stats().spec_verify_steps_total == 1


def test_seeded_sampling_repeats_run_to_run(make_engine):
    prompt = _prompts()[2]
    params = SamplingParams(temperature=0.8, top_p=0.95, max_tokens=16, seed=11, logprobs=0)
    plain = generate(make_engine(), [prompt], params)[0].outputs[0]
    runs = []
    for _ in range(2):
        # drafts of the plain run's sample: mostly plausible tokens, so some are accepted
        eng = make_engine(speculative=SPEC, proposer=Scripted([prompt + plain.token_ids], garble=4))
        runs.append(generate(eng, [prompt, prompt], params)[0].outputs[0].token_ids)
        assert eng.stats().spec_draft_tokens_total > 0
        assert_idle(eng)
    assert runs[0] == runs[1] and len(runs[0]) == 16


def test_drafts_that_keep_failing_switch_drafting_off(make_engine):
    prompt = _prompts()[0]
    params = SamplingParams(temperature=0, max_tokens=40)
    plain = generate(make_engine(), [prompt], params)[0].outputs[0]
    wrong = Scripted([prompt + plain.token_ids], k=4, garble=1)  # every guess wrong
    spec = SpeculativeConfig(num_speculative_tokens=4, disable_acceptance_rate=0.2, min_drafted_tokens=8, plan_by_step_cost=False)
    eng = make_engine(speculative=spec, proposer=wrong)
    got = generate(eng, [prompt], params)[0].outputs[0]
    assert got.token_ids == plain.token_ids
    st = eng.stats()
    assert st.spec_accepted_tokens_total == 0 and st.spec_draft_tokens_total == 8  # two drafts, then off
    assert_idle(eng)


def test_abort_while_drafting_returns_every_block(make_engine):
    prompts = _prompts()
    params = SamplingParams(temperature=0, max_tokens=30)
    plain = generate(make_engine(), prompts, params)
    drafter = Scripted([p + o.outputs[0].token_ids for p, o in zip(prompts, plain, strict=True)])
    eng = make_engine(num_blocks=64, speculative=SPEC, proposer=drafter)
    start = eng.block_manager.num_free
    for i, p in enumerate(prompts):
        eng.add_request(f"r{i}", p, params)
    for _ in range(6):
        eng.step()
    assert eng.stats().spec_verify_steps_total > 0 and eng.block_manager.num_used > 0
    for i in range(0, len(prompts), 2):
        assert eng.abort(f"r{i}").finished
    eng.block_manager.check_invariants()
    run_all(eng)
    assert_idle(eng)
    assert eng.block_manager.num_free == start


def test_a_step_verifies_at_most_its_draft_budget(make_engine):
    prompts = _prompts()
    params = SamplingParams(temperature=0, max_tokens=12)
    plain = generate(make_engine(), prompts, params)
    drafter = Scripted([p + o.outputs[0].token_ids for p, o in zip(prompts, plain, strict=True)], garble=10**9)
    spec = SpeculativeConfig(num_speculative_tokens=4, max_draft_tokens_per_step=6, plan_by_step_cost=False)
    eng = make_engine(speculative=spec, proposer=drafter)
    for i, p in enumerate(prompts):
        eng.add_request(f"r{i}", p, params)
    outs: dict = {}
    while eng.has_unfinished():
        before = eng.stats().spec_draft_tokens_total
        for out in eng.step():
            if out.finished:
                outs[out.request_id] = out.outputs[0].token_ids
        assert eng.stats().spec_draft_tokens_total - before <= 6
    assert [outs[f"r{i}"] for i in range(len(prompts))] == [o.outputs[0].token_ids for o in plain]
    assert eng.stats().spec_accepted_tokens_total > 0
    assert_idle(eng)
