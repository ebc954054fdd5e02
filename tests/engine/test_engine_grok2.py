"""LLMEngine on the tiny Grok-2 (float32): the fixture's prompts inside a staggered batch of 32
requests with chunked prefill and prefix caching, every one reproducing reference.json."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import assert_idle

from grokd import weights
from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.models.grok2 import Grok2ForCausalLM
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.tiktoken_tokenizer import TiktokenTokenizer


@pytest.fixture(scope="module")
def engine(grok2_tiny_dir) -> LLMEngine:
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    ckpt = weights.load(grok2_tiny_dir)
    model = Grok2ForCausalLM.from_checkpoint(ckpt, dtype=torch.float32)
    cfg = EngineConfig(
        model=ModelLoadConfig(model=str(grok2_tiny_dir), dtype="float32"),
        cache=CacheConfig(block_size=4, num_blocks=512, enable_prefix_caching=True),
        scheduler=SchedulerConfig(max_num_batched_tokens=64, max_num_seqs=32),  # long prompts are chunked
    )
    yield LLMEngine(cfg, model, TiktokenTokenizer(grok2_tiny_dir / "tokenizer.tok.json"), checkpoint=ckpt)
    torch.set_num_threads(prev)


def test_staggered_batch_of_32_reproduces_reference(engine: LLMEngine, grok2_tiny_reference: dict) -> None:
    """Five prompts, each submitted six or seven times, three new requests per step while earlier
    ones decode: repeats hit the prefix cache (an extension whose queries start past the length
    temperature's threshold), long prompts are prefilled in chunks beside decode rows; every
    request still yields the reference's greedy tokens, and those with prompt logprobs its
    logprobs at every position."""
    cases = grok2_tiny_reference["fp32"]["single"] + grok2_tiny_reference["fp32"]["chat"]
    order = [i % len(cases) for i in range(32)]
    pending = list(enumerate(order))
    done = {}
    while pending or engine.has_unfinished():
        for _ in range(3):
            if pending:
                r, c = pending.pop(0)
                params = SamplingParams(temperature=0.0, max_tokens=len(cases[c]["greedy"]), ignore_eos=True,
                                        prompt_logprobs=0 if r < len(cases) else None)
                engine.add_request(f"r{r}", cases[c]["prompt"], params)
        for out in engine.step():
            if out.finished:
                done[out.request_id] = out
    assert engine.stats().prefix_cache_hit_tokens > 0
    for r, c in enumerate(order):
        out, case = done[f"r{r}"], cases[c]
        assert out.outputs[0].token_ids == case["greedy"], r
        if out.prompt_logprobs is not None:
            ref = torch.tensor(case["logits"], dtype=torch.float64).log_softmax(-1)
            for p in range(1, len(case["prompt"])):
                assert abs(out.prompt_logprobs[p].logprob - ref[p - 1, case["prompt"][p]].item()) < 2e-3
    assert_idle(engine)
