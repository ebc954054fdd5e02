"""LLMEngine end to end on the grok1-tiny golden fixture (float32)."""

import random

import pytest
import torch
from engine_helpers import assert_idle, run_all

from grokd.engine.errors import ContextLengthError, QueueFullError
from grokd.engine.logits_processors import LogitsProcessor, sampler
from grokd.engine.request import Priority
from grokd.engine.sampling_params import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_tokens=8)


def ref_cases(reference):
    return reference["fp32"]["single"]


def test_greedy_tokens_and_logprobs_match_reference(make_engine, grok1_tiny_reference):
    eng = make_engine()
    cases = ref_cases(grok1_tiny_reference)
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5, prompt_logprobs=3)
    for i, case in enumerate(cases):
        eng.add_request(f"r{i}", case["prompt"], params)
    done = run_all(eng)
    for i, case in enumerate(cases):
        out = done[f"r{i}"]
        comp = out.outputs[0]
        assert comp.token_ids == case["greedy"]
        assert comp.finish_reason == "length"
        logits = torch.tensor(case["logits"])
        ref_lp = logits.log_softmax(-1)
        # the first generated token is predicted from the last prompt position's logits
        first = comp.logprobs[0]
        assert first.logprob == pytest.approx(ref_lp[-1, case["greedy"][0]].item(), abs=2e-3)
        assert [t for t, _ in first.top] == ref_lp[-1].topk(5).indices.tolist()
        assert [v for _, v in first.top] == pytest.approx(ref_lp[-1].topk(5).values.tolist(), abs=2e-3)
        # prompt logprobs: position p's logits score prompt token p + 1
        plp = out.prompt_logprobs
        assert plp[0] is None and len(plp) == len(case["prompt"])
        for p in range(1, len(case["prompt"])):
            assert plp[p].token_id == case["prompt"][p]
            assert plp[p].logprob == pytest.approx(ref_lp[p - 1, case["prompt"][p]].item(), abs=2e-3)
            assert len(plp[p].top) == 3
    assert_idle(eng)


def test_prompt_logprobs_survive_chunked_prefill(make_engine, grok1_tiny_reference):
    case = ref_cases(grok1_tiny_reference)[2]
    eng = make_engine(budget=8)
    eng.add_request("r", case["prompt"], SamplingParams(temperature=0, max_tokens=2, prompt_logprobs=0))
    out = run_all(eng)["r"]
    ref_lp = torch.tensor(case["logits"]).log_softmax(-1)
    got = [lp.logprob for lp in out.prompt_logprobs[1:]]
    want = [ref_lp[p - 1, case["prompt"][p]].item() for p in range(1, len(case["prompt"]))]
    assert got == pytest.approx(want, abs=2e-3)
    assert out.outputs[0].token_ids == case["greedy"][:2]


def random_prompts(n: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(3, 1024) for _ in range(rng.randrange(2, 70))] for _ in range(n)]


def run_alone(make_engine, prompt, params):
    eng = make_engine()
    eng.add_request("solo", prompt, params)
    return run_all(eng)["solo"].outputs[0].token_ids


def run_staggered(eng, prompts, params_for, per_step: int = 3) -> dict:
    """Submit a few requests per step while earlier ones are running (continuous batching)."""
    pending = list(enumerate(prompts))
    done = {}
    while pending or eng.has_unfinished():
        for _ in range(per_step):
            if pending:
                i, p = pending.pop(0)
                eng.add_request(f"r{i}", p, params_for(i))
        for out in eng.step():
            if out.finished:
                done[out.request_id] = out
    return done


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "seeded"])
def test_batch_of_32_equals_each_alone(make_engine, sampled):
    prompts = random_prompts(32)

    def params_for(i):
        max_tokens = 4 + i % 9
        if sampled:
            return SamplingParams(temperature=0.9, top_p=0.95, max_tokens=max_tokens, seed=1000 + i)
        return SamplingParams(temperature=0.0, max_tokens=max_tokens)

    eng = make_engine(budget=96)  # small budget: long prompts are chunked across steps
    done = run_staggered(eng, prompts, params_for)
    assert eng.stats().steps_total < sum(params_for(i).max_tokens for i in range(32))  # really batched
    for i, p in enumerate(prompts):
        assert done[f"r{i}"].outputs[0].token_ids == run_alone(make_engine, p, params_for(i)), i
    assert_idle(eng)


def test_prefix_cache_reuse_is_counted_and_output_unchanged(make_engine):
    rng = random.Random(3)
    prefix = [rng.randrange(3, 1024) for _ in range(40)]
    a, b = prefix + [5, 6, 7], prefix + [9, 10]
    eng = make_engine(block_size=4)
    eng.add_request("a", a, GREEDY)
    run_all(eng)
    hits = eng.stats().prefix_cache_hit_tokens
    eng.add_request("b", b, GREEDY)
    out_b = run_all(eng)["b"]
    st = eng.stats()
    assert st.prefix_cache_hit_tokens - hits == 40  # ten full blocks of the shared prefix
    assert out_b.num_cached_tokens == 40
    uncached = make_engine(caching=False)
    uncached.add_request("b", b, GREEDY)
    assert run_all(uncached)["b"].outputs[0].token_ids == out_b.outputs[0].token_ids
    assert uncached.stats().prefix_cache_hit_tokens == 0
    assert_idle(eng)
    assert st.kv_blocks_cached > 0


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "seeded"])
def test_tiny_pool_forces_preemption_yet_outputs_are_correct(make_engine, sampled):
    prompts = random_prompts(10, seed=7)
    params = SamplingParams(temperature=0.0, max_tokens=12)
    if sampled:  # a seeded generator advances once per sampled token, so recompute cannot shift it
        params = SamplingParams(temperature=1.0, top_k=50, max_tokens=12, seed=77)
    eng = make_engine(num_blocks=24, block_size=4)  # 96 token slots for ~10 x 50 tokens
    for i, p in enumerate(prompts):
        eng.add_request(f"r{i}", p, params, priority=Priority.BATCH if i % 2 else Priority.INTERACTIVE)
    done = run_all(eng)
    assert eng.stats().num_preempted_total > 0
    for i, p in enumerate(prompts):
        out = done[f"r{i}"]
        assert out.error is None
        assert out.outputs[0].token_ids == run_alone(make_engine, p, params), i
    assert_idle(eng)


def test_abort_running_and_waiting_returns_every_block(make_engine):
    prompts = random_prompts(6, seed=11)
    eng = make_engine(num_blocks=40, max_seqs=2)
    for i, p in enumerate(prompts):
        eng.add_request(f"r{i}", p, SamplingParams(temperature=0, max_tokens=50))
    eng.step()
    eng.step()
    assert eng.stats().num_running == 2 and eng.stats().num_waiting == 4
    outs = [eng.abort(f"r{i}") for i in (0, 3)]
    assert all(o.finished and o.outputs[0].finish_reason == "abort" for o in outs)
    assert eng.abort("nope") is None
    for i in (1, 2, 4, 5):
        eng.abort(f"r{i}")
    assert not eng.has_unfinished()
    assert_idle(eng)


def test_queue_full_and_context_length_rejected_at_submit(make_engine):
    eng = make_engine(max_queued=2)
    eng.add_request("a", [5, 6], GREEDY)
    eng.add_request("b", [5, 6], GREEDY)
    with pytest.raises(QueueFullError):
        eng.add_request("c", [5, 6], GREEDY)
    with pytest.raises(ContextLengthError, match=r"260 tokens.*limit 256"):
        eng.add_request("d", [5] * 250, SamplingParams(max_tokens=10))
    with pytest.raises(ValueError, match="temperature"):
        eng.add_request("e", [5], SamplingParams(temperature=5))
    with pytest.raises(ValueError, match="token ids"):
        eng.add_request("f", [5000], GREEDY)


def test_request_that_never_fits_the_pool_finishes_with_error(make_engine):
    eng = make_engine(num_blocks=4, block_size=4)
    eng.add_request("big", list(range(10, 40)), GREEDY)
    eng.add_request("ok", [5, 6, 7], GREEDY)
    done = run_all(eng)
    assert done["big"].outputs[0].finish_reason == "error"
    assert "pool holds only 16" in done["big"].error
    assert done["ok"].outputs[0].finish_reason == "length"
    assert_idle(eng)


def test_stop_token_ids_eos_min_tokens(make_engine, grok1_tiny_reference):
    case = ref_cases(grok1_tiny_reference)[0]
    greedy = case["greedy"]
    eng = make_engine()
    eng.add_request(
        "stop", case["prompt"], SamplingParams(temperature=0, max_tokens=8, stop_token_ids=[greedy[3]])
    )
    out = run_all(eng)["stop"].outputs[0]
    assert out.token_ids == greedy[:4] and out.finish_reason == "stop" and out.stop_reason == greedy[3]
    # min_tokens blocks the stop id: the model must pick something else at step 4
    eng.add_request(
        "min",
        case["prompt"],
        SamplingParams(temperature=0, max_tokens=6, stop_token_ids=[greedy[3]], min_tokens=5),
    )
    out = run_all(eng)["min"].outputs[0]
    assert out.token_ids[:3] == greedy[:3] and out.token_ids[3] != greedy[3] and len(out.token_ids) == 6
    assert_idle(eng)


def test_stop_string_across_tokens_on_fixture(make_engine, tiny_tokenizer, grok1_tiny_reference):
    case = ref_cases(grok1_tiny_reference)[1]
    eng = make_engine(tokenizer=tiny_tokenizer)
    eng.add_request("full", case["prompt"], GREEDY)
    full = run_all(eng)["full"].outputs[0]
    text = full.text
    assert full.token_ids == case["greedy"]
    # a stop string that straddles the boundary between generated tokens 3 and 4
    pieces = [tiny_tokenizer.token_bytes(t).decode("utf-8", "replace") for t in case["greedy"]]
    cut = len("".join(pieces[:3]))
    stop = text[cut - 1 : cut + 1]
    assert text == "".join(pieces) and len(stop) == 2
    first = text.find(stop)
    eng.add_request("stopped", case["prompt"], SamplingParams(temperature=0, max_tokens=8, stop=[stop]))
    deltas, final = [], None
    while eng.has_unfinished():
        for o in eng.step():
            deltas.append(o.outputs[0].delta_text)
            final = o
    comp = final.outputs[0]
    assert comp.finish_reason == "stop" and comp.stop_reason == stop
    assert comp.text == text[:first] == "".join(deltas)
    assert stop not in comp.text
    assert_idle(eng)


def test_n_samples_share_prompt_blocks(make_engine, grok1_tiny_reference):
    case = ref_cases(grok1_tiny_reference)[2]  # 33 tokens: 8 full blocks of 4 shared
    eng = make_engine()
    eng.add_request("g", case["prompt"], SamplingParams(n=3, temperature=0, max_tokens=8))
    eng.step()  # prefill of sample 0; samples 1, 2 fork onto its blocks
    shared = eng.requests["g"].seqs[0].block_table[:8]
    assert all(s.block_table[:8] == shared for s in eng.requests["g"].seqs[1:])
    out = run_all(eng)["g"]
    assert [c.token_ids for c in out.outputs] == [case["greedy"]] * 3
    assert [c.index for c in out.outputs] == [0, 1, 2]
    eng.add_request("s", case["prompt"], SamplingParams(n=4, temperature=1.0, max_tokens=8, seed=5))
    out = run_all(eng)["s"]
    seqs = [tuple(c.token_ids) for c in out.outputs]
    assert len(set(seqs)) > 1 and all(len(s) == 8 for s in seqs)
    assert_idle(eng)


@sampler("boom")
class Boom(LogitsProcessor):
    def apply(self, logits, rows):
        raise RuntimeError("sampler exploded")


def test_failing_step_fails_its_requests_and_engine_goes_on(make_engine):
    eng = make_engine(extra_samplers=[Boom])
    eng.add_request("bad", [5, 6, 7], SamplingParams(temperature=0, extra={"boom": {}}))
    done = run_all(eng)
    assert done["bad"].outputs[0].finish_reason == "error"
    assert "sampler exploded" in done["bad"].error
    eng.add_request("good", [5, 6, 7], GREEDY)
    assert run_all(eng)["good"].outputs[0].finish_reason == "length"
    assert_idle(eng)


def test_stats_track_tokens_and_steps(make_engine):
    eng = make_engine()
    eng.add_request("a", [5, 6, 7, 8], GREEDY)
    run_all(eng)
    st = eng.stats()
    assert st.prompt_tokens_total == 4 and st.generation_tokens_total == 8
    assert st.steps_total == 8 and st.last_step_tokens == 1 and st.last_step_seconds > 0
    assert st.kv_blocks_total == 256 and st.kv_blocks_used == 0


def test_structured_output_through_the_grammar_seam(make_engine, tiny_tokenizer):
    import json

    from grokd.engine.structured import specs
    eng = make_engine(tokenizer=tiny_tokenizer)
    params = SamplingParams(temperature=0.7, seed=1, max_tokens=40, structured=specs.JsonObjectSpec())
    eng.add_request("j", [5, 6, 7, 8], params)
    out = run_all(eng)["j"].outputs[0]
    assert out.finish_reason == "stop"
    assert isinstance(json.loads(out.text), dict)
    assert_idle(eng)
