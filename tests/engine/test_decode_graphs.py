"""Decode steps through the padded static buffers CUDA graphs replay (``engine.decode_graphs``).

On the CPU the path runs eagerly (``decode_graphs="eager"``), which checks everything but the
capture itself: bucketing, the padded rows and the sink block, the tables padded and masked.
tests/engine/test_cuda.py checks the captured graphs on a GPU."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from engine_helpers import assert_idle, run_all

from grokd.engine.decode_graphs import block_buckets, bucket
from grokd.engine.model_runner import ModelRunner
from grokd.engine.sampling_params import SamplingParams
from grokd.kernels.arith import ceil_div


def with_graph_runner(engine, mode: str = "eager", kv_cache_dtype: str = "auto"):
    """Swap in a runner that sends decode-only steps through ``DecodeGraphs`` (``mode="off"``: one
    that does not), with a pool of ``kv_cache_dtype``."""
    cfg = engine.config
    engine.runner = ModelRunner(
        engine.model, dataclasses.replace(cfg.cache, dtype=kv_cache_dtype), torch.float32, "cpu", engine.runner.num_blocks, decode_graphs=mode,
        max_batch=cfg.scheduler.max_num_seqs, max_blocks_per_seq=ceil_div(engine.max_model_len, cfg.cache.block_size),
    )
    return engine


def test_buckets():
    sizes = block_buckets(20)
    assert sizes == [1, 2, 4, 8, 16, 20]
    assert bucket(1, sizes) == 1 and bucket(5, sizes) == 8 and bucket(17, sizes) == 20
    assert bucket(21, sizes) is None
    assert block_buckets(1) == [1]


def test_padded_decode_matches_reference(make_engine, grok1_tiny_reference):
    eng = with_graph_runner(make_engine(num_blocks=128, max_seqs=8))
    graphs = eng.runner.graphs
    assert graphs is not None and graphs.capture is False and graphs.batch_sizes[-1] == 8
    # the pool holds one sink block past the block manager's
    assert eng.runner.kv_caches[0].shape[1] == eng.block_manager.num_blocks + 1 == 129
    cases = grok1_tiny_reference["fp32"]["single"]
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=3)
    for rep in range(2):  # 6 rows: padded to the bucket of 8
        for i, case in enumerate(cases):
            eng.add_request(f"r{rep}-{i}", case["prompt"], params)
    done = run_all(eng)
    for rep in range(2):
        for i, case in enumerate(cases):
            comp = done[f"r{rep}-{i}"].outputs[0]
            assert comp.token_ids == case["greedy"]
            ref_lp = torch.tensor(case["logits"]).log_softmax(-1)
            assert comp.logprobs[0].logprob == pytest.approx(ref_lp[-1, case["greedy"][0]].item(), abs=2e-3)
    used = set(graphs._steps)
    assert {b for b, _ in used} == {8}  # 6 rows are padded to the bucket of 8
    assert all(nb in graphs.block_sizes for _, nb in used)
    assert_idle(eng)


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "int8"])
def test_padded_and_plain_steps_agree_row_for_row(make_engine, grok1_tiny_reference, kv_cache_dtype):
    """Same requests, one engine with the padded path and one without: identical greedy tokens
    and logprobs to float32 rounding, for a batch size that is not a bucket (3 -> 4); an int8
    pool's padding reads the zeroed sink block (scale 0) like a float one."""
    prompts = [c["prompt"] for c in grok1_tiny_reference["fp32"]["single"]]
    params = SamplingParams(temperature=0.0, max_tokens=12, logprobs=5)
    outs = []
    for graphs in (False, True):
        eng = make_engine(num_blocks=64, max_seqs=4)
        with_graph_runner(eng, "eager" if graphs else "off", kv_cache_dtype)
        expected = torch.int8 if kv_cache_dtype == "int8" else torch.float32
        assert eng.runner.kv_caches[0].dtype == expected
        for i, p in enumerate(prompts):
            eng.add_request(f"r{i}", p, params)
        outs.append(run_all(eng))
        if graphs:
            assert eng.runner.graphs._steps  # the padded path ran
    for i in range(len(prompts)):
        plain, padded = outs[0][f"r{i}"].outputs[0], outs[1][f"r{i}"].outputs[0]
        assert plain.token_ids == padded.token_ids
        for a, b in zip(plain.logprobs, padded.logprobs, strict=True):
            # int8: the C kernel scales q·k once per token, the padded path dequantizes each value
            assert a.logprob == pytest.approx(b.logprob, abs=1e-4 if kv_cache_dtype == "auto" else 1e-3)


def test_prefill_and_mixed_steps_stay_on_the_plain_path(make_engine, grok1_tiny_reference):
    eng = with_graph_runner(make_engine(num_blocks=64, max_seqs=4))
    prompt = grok1_tiny_reference["fp32"]["single"][0]["prompt"]
    eng.add_request("a", prompt, SamplingParams(temperature=0.0, max_tokens=1))
    eng.step()  # the prefill: several query tokens, not a decode-only step
    assert not eng.runner.graphs._steps
    run_all(eng)
    assert_idle(eng)


def test_bad_mode_is_refused(tiny_model):
    from grokd.engine.config import CacheConfig

    with pytest.raises(ValueError, match="decode_graphs"):
        ModelRunner(tiny_model[0], CacheConfig(num_blocks=4), torch.float32, "cpu", 4, decode_graphs="always")
