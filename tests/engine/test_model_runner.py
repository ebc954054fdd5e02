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
    """The runner's plan reads the config's explicit sizes first (``engine.kv_budget`` has the rest)."""
    cpu = torch.device("cpu")
    per, avail = 1000, 1 << 30
    plan = plan_num_blocks(CacheConfig(num_blocks=7, kv_cache_memory=10**9), per, cpu, 100, available_bytes=avail)
    assert plan.num_blocks == 7
    explicit = plan_num_blocks(CacheConfig(kv_cache_memory=123_456), per, cpu, 10, available_bytes=avail)
    assert explicit.num_blocks == 123  # explicit budget wins
    capped = plan_num_blocks(CacheConfig(kv_cache_fraction=0.5, enable_prefix_caching=False), per,
                             torch.device("cuda"), 100, available_bytes=avail)
    assert capped.num_blocks == 100 and capped.source == "scheduler"
    assert plan_num_blocks(CacheConfig(), per, cpu, 100, weights_bytes=20_000, available_bytes=avail).num_blocks == 40


def test_runner_reports_the_weights_and_a_resident_pool(make_engine):
    eng = make_engine(budget=5)
    runner = eng.runner
    assert runner.weights_bytes >= sum(p.numel() * p.element_size() for p in eng.model.parameters()) > 0
    assert eng.stats().kv_block_bytes == runner.bytes_per_block


def test_runner_packs_only_needed_rows(make_engine):
    eng = make_engine(budget=5)
    eng.add_request("a", [5, 6, 7, 8, 9, 10, 11], SamplingParams(temperature=0, max_tokens=1))
    sched = eng.scheduler.schedule()
    assert [i.num_tokens for i in sched.scheduled] == [5] and not sched.scheduled[0].samples
    out = eng.runner.execute(sched.scheduled, set())
    assert out.sample_logits.shape == (0, 1024) and out.prompt_logits == {}
    out = eng.runner.execute(sched.scheduled, {0})
    assert out.prompt_logits[0].shape == (5, 1024)
