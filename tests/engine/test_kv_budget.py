"""KV pool sizing: a pure function of the model's sizes, the serving limits and the memory there is."""

from __future__ import annotations

import pytest

from grokd.engine.kv_budget import (
    CPU_KV_PER_WEIGHT,
    MIN_HEADROOM,
    PREFIX_HEADROOM,
    KVPoolTooLarge,
    PoolInputs,
    plan_pool,
)

MIB = 1 << 20
GIB = 1 << 30
# SmolLM2-135M in bfloat16: 30 layers x 3 KV heads x 64 dims x 2 (K, V) x 2 bytes x 16 tokens
SMOL_BLOCK = 2 * 30 * 16 * 3 * 64 * 2
SMOL_WEIGHTS = 270 * MIB


def smol(**kw) -> PoolInputs:
    """SmolLM2 served with the defaults (64 sequences of 8,192 tokens) on a 24 GiB machine."""
    base = dict(bytes_per_block=SMOL_BLOCK, scheduler_blocks=64 * 512, blocks_per_seq=512,
                available_bytes=24 * GIB, weights_bytes=SMOL_WEIGHTS)
    return PoolInputs(**{**base, **kw})


def test_small_model_default_pool_is_bounded_by_its_weights_on_cpu():
    plan = plan_pool(smol())
    assert plan.source == "weights"
    assert plan.num_blocks == int(SMOL_WEIGHTS * CPU_KV_PER_WEIGHT) // SMOL_BLOCK
    assert plan.num_bytes <= CPU_KV_PER_WEIGHT * SMOL_WEIGHTS < 1 * GIB  # not a fifth of the machine
    assert plan.num_blocks >= 512  # one full-length sequence always fits


def test_weights_bound_never_drops_below_one_full_sequence():
    plan = plan_pool(smol(weights_bytes=1))
    assert plan.source == "weights" and plan.num_blocks == int(512 * (1 + PREFIX_HEADROOM))
    assert plan_pool(smol(weights_bytes=1, prefix_caching=False)).num_blocks == 512


def test_gpu_pool_takes_the_machine_share_up_to_what_the_scheduler_fills():
    plan = plan_pool(smol(on_cpu=False, available_bytes=80 * GIB, kv_cache_fraction=0.9,
                          scheduler_blocks=1024 * 512))
    usable = 80 * GIB - 8 * GIB  # 10% headroom
    assert plan.source == "machine" and plan.num_blocks == int(usable * 0.9) // SMOL_BLOCK
    few = plan_pool(smol(on_cpu=False, available_bytes=80 * GIB, scheduler_blocks=100))
    assert few.source == "scheduler" and few.num_blocks == int(100 * (1 + PREFIX_HEADROOM))


def test_a_small_machine_bounds_the_pool_after_its_headroom():
    plan = plan_pool(smol(available_bytes=1 * GIB, kv_cache_fraction=0.5))
    assert plan.source == "machine" and plan.headroom_bytes == MIN_HEADROOM
    assert plan.num_blocks == int((GIB - MIN_HEADROOM) * 0.5) // SMOL_BLOCK


def test_explicit_sizes_win_when_they_fit():
    assert plan_pool(smol(num_blocks=7, kv_cache_memory=GIB)).num_blocks == 7
    plan = plan_pool(smol(kv_cache_memory=512 * MIB))
    assert plan.source == "kv_cache_memory" and plan.num_blocks == 512 * MIB // SMOL_BLOCK
    assert plan.num_bytes <= 512 * MIB
    assert plan_pool(smol(kv_cache_memory=1)).num_blocks == 1


def test_an_explicit_pool_that_cannot_fit_names_the_sizes():
    with pytest.raises(KVPoolTooLarge) as err:
        plan_pool(smol(kv_cache_memory=64 * GIB))
    msg = str(err.value)
    assert msg.startswith("kv_cache_memory: a KV pool of ")
    assert f"{64 * GIB // SMOL_BLOCK} blocks x {SMOL_BLOCK} bytes = 65536 MiB" in msg
    assert "24576 MiB available" in msg and "--kv-cache-memory" in msg
    with pytest.raises(KVPoolTooLarge, match="num_kv_blocks: a KV pool of 10000000 blocks"):
        plan_pool(smol(num_blocks=10_000_000))


def test_no_room_for_one_block_is_an_error_not_a_one_block_pool():
    with pytest.raises(KVPoolTooLarge, match="not one block"):
        plan_pool(smol(available_bytes=MIN_HEADROOM))


def test_nonsense_sizes_are_rejected():
    with pytest.raises(ValueError, match="sizes must be >= 1"):
        plan_pool(smol(blocks_per_seq=0))
