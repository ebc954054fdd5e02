"""KV pool sizing and batch packing."""

import torch

from grokd.engine.config import CacheConfig
from grokd.engine.model_runner import kv_bytes_per_block, plan_num_blocks
from grokd.engine.sampling_params import SamplingParams


class Dims(torch.nn.Module):
    num_layers, num_kv_heads, head_dim = 64, 8, 128


def test_bytes_per_block_matches_grok1_arithmetic():
    # DESIGN.md: full Grok-1 holds 256 KiB of bf16 KV per token
    assert kv_bytes_per_block(Dims(), 16, torch.bfloat16) == 16 * 256 * 1024
    assert kv_bytes_per_block(Dims(), 16, torch.float32) == 16 * 512 * 1024


def test_pool_size_sources_in_order():
    cpu = torch.device("cpu")
    per = 1000
    assert plan_num_blocks(CacheConfig(num_blocks=7, kv_cache_memory=10**9), per, cpu, 100) == 7
    assert plan_num_blocks(CacheConfig(kv_cache_memory=123_456), per, cpu, 10) == 123  # explicit budget wins
    assert plan_num_blocks(CacheConfig(kv_cache_fraction=0.5), per, cpu, 100) == 100  # capped at useful
    assert plan_num_blocks(CacheConfig(kv_cache_fraction=1e-12), per, cpu, 100) == 1


def test_runner_packs_only_needed_rows(make_engine):
    eng = make_engine(budget=5)
    eng.add_request("a", [5, 6, 7, 8, 9, 10, 11], SamplingParams(temperature=0, max_tokens=1))
    sched = eng.scheduler.schedule()
    assert [i.num_tokens for i in sched.scheduled] == [5] and not sched.scheduled[0].samples
    out = eng.runner.execute(sched.scheduled, set())
    assert out.sample_logits.shape == (0, 1024) and out.prompt_logits == {}
    out = eng.runner.execute(sched.scheduled, {0})
    assert out.prompt_logits[0].shape == (5, 1024)
