"""``--kv-cache-dtype int8``: the engine allocates, sizes and reads an int8 pool, and generates what
the bf16/float32 pool generates, within the quantization's error."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import run_all

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.model_runner import kv_bytes_per_block
from grokd.engine.sampling_params import SamplingParams


class Dims(torch.nn.Module):
    num_layers, num_kv_heads, head_dim = 64, 8, 128


def test_int8_pool_bytes_per_block_count_the_scales():
    # Grok-1: 64 layers x K and V x 8 heads x (128 values + a 4-byte scale) per token
    assert kv_bytes_per_block(Dims(), 16, torch.int8) == 16 * 2 * 64 * 8 * 132
    assert kv_bytes_per_block(Dims(), 16, torch.int8) / kv_bytes_per_block(Dims(), 16, torch.bfloat16) == 132 / 256


def test_a_bad_kv_cache_dtype_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="kv_cache_dtype: expected one of auto, int8, got 'fp4'"):
        CacheConfig(dtype="fp4")


def test_grok1_tiny_int8_pool_gives_the_same_tokens_alone_batched_and_chunked(tiny_model, grok1_tiny_dir,
                                                                             one_thread):
    """Grok-1 (soft-capped attention, 8 KV heads of 16) over an int8 pool: a request decodes the same
    greedy tokens alone, in one prefill, as in a batch of others with 8-token prefill chunks and
    prefix caching, so every path (reference prefill, batched decode) reads the pool alike. (The
    golden logits are no yardstick here: in this random 2-layer MoE even a bf16 pool flips expert
    choices and moves logits by several nats.)"""
    model, ckpt = tiny_model

    def engine(budget: int) -> LLMEngine:
        cfg = EngineConfig(
            model=ModelLoadConfig(model=str(grok1_tiny_dir), dtype="float32", weights_dtype="float32"),
            cache=CacheConfig(block_size=4, num_blocks=256, dtype="int8"),
            scheduler=SchedulerConfig(max_num_batched_tokens=budget),
        )
        return LLMEngine(cfg, model, None, checkpoint=ckpt)

    prompts = [[(7 * i + 3 * j) % 1000 + 3 for j in range(9 + 5 * i)] for i in range(4)]
    params = SamplingParams(temperature=0.0, max_tokens=10, ignore_eos=True)
    alone = {}
    for i, prompt in enumerate(prompts):
        eng = engine(512)
        pool = eng.runner.kv_caches[0]
        assert pool.dtype == torch.int8 and pool.shape[-1] == model.head_dim + 4
        eng.add_request("solo", prompt, params)
        alone[i] = run_all(eng)["solo"].outputs[0].token_ids
    eng = engine(8)
    for i, prompt in enumerate(prompts):
        eng.add_request(f"r{i}", prompt, params)
    eng.add_request("again", prompts[1], params)  # shares prompts[1]'s cached blocks
    done = run_all(eng)
    assert {i: done[f"r{i}"].outputs[0].token_ids for i in alone} == alone
    assert done["again"].outputs[0].token_ids == alone[1]
    assert len(set(map(tuple, alone.values()))) > 1  # not a degenerate constant output


def test_smollm2_greedy_chat_answer_is_the_same_with_an_int8_pool(smollm2_checkpoint, smollm2_tokenizer):
    """The default model in bf16 through the CPU kernels (RoPE + quantized write, decode attention,
    the fused layer): an int8 pool gives the bf16 pool's greedy answer to a factual question."""
    from grokd.engine.chat_template import render_chat
    from grokd.engine.models.llama import LlamaForCausalLM

    model = LlamaForCausalLM.from_checkpoint(smollm2_checkpoint, torch.bfloat16, "auto", "cpu")
    text = render_chat([{"role": "user", "content": "What is the capital of France? Answer in one sentence."}],
                       template=smollm2_tokenizer.chat_template, tokenizer=smollm2_tokenizer)
    prompt = smollm2_tokenizer.encode(text)
    answers = {}
    for kv in ("auto", "int8"):
        cfg = EngineConfig(model=ModelLoadConfig(dtype="bfloat16"),
                           cache=CacheConfig(num_blocks=64, dtype=kv, enable_prefix_caching=False))
        eng = LLMEngine(cfg, model, smollm2_tokenizer)
        assert eng.runner.kv_caches[0].dtype == (torch.int8 if kv == "int8" else torch.bfloat16)
        eng.add_request("q", prompt, SamplingParams(temperature=0.0, max_tokens=24))
        answers[kv] = run_all(eng)["q"].outputs[0]
    assert "Paris" in answers["int8"].text
    assert answers["int8"].token_ids == answers["auto"].token_ids
