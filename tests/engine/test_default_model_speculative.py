"""Prompt-lookup speculation on the default model (SmolLM2, bf16 through the C decode stack on
x86 with AVX2): greedy output over a mixed batch (a grounded rewrite, a code edit, free text,
arriving at different steps) is the non-speculative output token for token, and the grounded
requests accept most drafts."""

import pytest
import torch

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig, SpeculativeConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.sampling_params import SamplingParams

PARAGRAPH = ("The old lighthouse stood on the northern cliff for two hundred years. Every night its keeper "
             "climbed the spiral stairs, trimmed the wick and watched the ships pass safely through the narrow "
             "channel below.")
PROMPTS = [
    f"Rewrite this paragraph, changing only the word 'old' to 'ancient':\n\n{PARAGRAPH}\n\nRewritten:\n\n",
    "Write a short poem about the sea.",
    "def area(w, h):\n    return w * h\n\n# the same function with type hints:\ndef area(",
    "List three facts about Mars.",
]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from grokd.engine.loader import load_model_and_tokenizer

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    model_cfg = ModelLoadConfig(model=None)
    model, tok, ckpt = load_model_and_tokenizer(model_cfg)
    yield model_cfg, model, tok, ckpt
    torch.set_num_threads(prev)


def run(smollm2, speculative):
    model_cfg, model, tok, ckpt = smollm2
    cfg = EngineConfig(model=model_cfg, cache=CacheConfig(num_blocks=96),
                       scheduler=SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=4), speculative=speculative)
    eng = LLMEngine(cfg, model, tok, checkpoint=ckpt)
    params = SamplingParams(temperature=0, max_tokens=40)
    done, steps = {}, 0
    while len(done) < len(PROMPTS):
        if steps % 3 == 0 and steps // 3 < len(PROMPTS):  # a new request every third step
            i = steps // 3
            eng.add_request(f"r{i}", tok.encode(PROMPTS[i]), params)
        for out in eng.step():
            if out.finished:
                done[out.request_id] = out.outputs[0].token_ids
        steps += 1
    eng.block_manager.check_invariants()
    assert eng.block_manager.num_used == 0
    return [done[f"r{i}"] for i in range(len(PROMPTS))], eng.stats(), steps


def test_greedy_identity_over_a_mixed_batch(smollm2):
    plain, _, plain_steps = run(smollm2, None)
    spec, st, spec_steps = run(smollm2, SpeculativeConfig(num_speculative_tokens=4))
    assert spec == plain
    assert st.spec_accepted_tokens_total >= 0.5 * st.spec_draft_tokens_total > 0
    assert spec_steps < plain_steps


def test_the_default_model_drafting_for_itself_through_the_draft_model_method(smollm2, smollm2_gguf):
    """A mechanism check of ``draft_model`` loaded from its path (no smaller model of SmolLM2's
    tokenizer is available here): greedy drafts of the target itself are the target's own greedy
    tokens, so output is unchanged and nearly every draft passes (bf16 ties aside)."""
    plain, _, plain_steps = run(smollm2, None)
    spec = SpeculativeConfig(method="draft_model", model=str(smollm2_gguf), num_speculative_tokens=3,
                             plan_by_step_cost=False)
    got, st, spec_steps = run(smollm2, spec)
    assert got == plain
    assert st.spec_accepted_tokens_total >= 0.9 * st.spec_draft_tokens_total > 0
    assert spec_steps < plain_steps
