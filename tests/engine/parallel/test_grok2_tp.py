"""Grok-2 sharded over 2 and 4 gloo ranks straight from the release layout, the MoE split by the
intermediate dimension (TP) or by whole experts (EP): every prompt position's logits against the
single-rank model and the float32 reference, greedy decoding through the paged cache (past the
length temperature's threshold), and the bytes each rank read from the rank-split files.

One launch of 4 forked ranks (a subgroup of 2 cut from them) runs every configuration.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from grok1_steps import prefill_all
from test_grok1_tp import greedy
from tp_harness import run_ranks

from grokd.engine.config import ParallelConfig
from grokd.engine.models.grok2 import Grok2ForCausalLM
from grokd.engine.parallel.group import DistGroup
from grokd.engine.parallel.shard import TensorParallel
from grokd.kernels import cpu_build
from grokd.weights import load
from grokd.weights.lazy import ReadLog
from grokd.weights.tp_release import read_tp_release

TP_TOL = 2e-4  # a different association of the same float32 sums (o-proj, MoE and dense partials)
CONFIGS = [(tp, ep) for tp in (2, 4) for ep in (False, True)]


def _rank(world: DistGroup, path: Path, prompts: list[list[int]], steps: int) -> dict:
    groups = {4: world, 2: world.split(2)}
    out: dict = {}
    for tp, ep in CONFIGS:
        if world.rank >= tp:
            continue
        log = ReadLog()
        par = TensorParallel(groups[tp], ParallelConfig(tp, ep))
        model = Grok2ForCausalLM.from_checkpoint(read_tp_release(path, log), dtype=torch.float32, tp=par)
        out[tp, ep] = {"bytes": log.bytes, "kv_heads": model.num_kv_heads,
                       "logits": prefill_all(model, prompts, torch.float32),
                       "greedy": greedy(model, prompts, steps, torch.float32)}
    if world.rank == 0:
        single = Grok2ForCausalLM.from_checkpoint(load(path), dtype=torch.float32)
        out["single"] = prefill_all(single, prompts, torch.float32)
    return out


@pytest.fixture(scope="module")
def runs(grok2_tiny_dir, grok2_tiny_reference, tmp_path_factory):
    cases = grok2_tiny_reference["fp32"]["single"] + grok2_tiny_reference["fp32"]["chat"]
    fn = partial(_rank, path=grok2_tiny_dir, prompts=[c["prompt"] for c in cases], steps=len(cases[0]["greedy"]))
    cpu_build.available()  # build the C kernels once here: the forked ranks inherit them instead of each building
    return cases, run_ranks(4, fn, tmp_path_factory.mktemp("grok2-tp"))


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("tp", "ep"), CONFIGS)
def test_sharded_logits_and_tokens_match_single_rank_and_reference(runs, tp, ep):
    cases, results = runs
    res = results[0][tp, ep]
    assert _max_diff(res["logits"], results[0]["single"]) < TP_TOL
    for logits, case in zip(res["logits"], cases, strict=True):
        ref = torch.tensor(case["logits"], dtype=torch.float64).log_softmax(-1)
        assert (logits.double().log_softmax(-1) - ref).abs().max().item() < 2e-3
    assert res["greedy"] == [c["greedy"] for c in cases]
    for r in range(1, tp):
        assert _max_diff(results[r][tp, ep]["logits"], res["logits"]) == 0.0


@pytest.mark.parametrize(("tp", "ep"), CONFIGS)
def test_each_rank_reads_only_its_slices(runs, grok2_tiny_dir, tp, ep):
    """Together the ranks read the release about once (the norms, routers and, at 4 ranks, the
    two KV heads are replicated); each rank about its share of it."""
    _, results = runs
    ckpt = load(grok2_tiny_dir)
    total = sum(t.numel() * t.element_size() for _, t in ckpt.tensors())
    read = [results[r][tp, ep]["bytes"] for r in range(tp)]
    assert total <= sum(read) < total * 1.15
    for r in range(tp):
        assert results[r][tp, ep]["kv_heads"] == max(1, 2 // tp)
        assert read[r] < total / tp * 1.15
