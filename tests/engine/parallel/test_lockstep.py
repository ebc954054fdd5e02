"""The tensor-parallel engine loop on two real gloo ranks: rank 0's ``LLMEngine`` schedules and
samples and sends every step through its runner's ``StepChannel``; rank 1 runs
``run_worker`` on the same config. Checked: the greedy tokens and logprobs of the golden
fixture (chunked prefills mixed with decodes), the KV pool both ranks agree on (the smaller
count), and that the worker ran exactly the steps rank 0 ran, then stopped."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

import pytest
import torch
from tp_harness import run_ranks

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, ParallelConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.parallel.channel import StepChannel
from grokd.engine.parallel.group import DistGroup
from grokd.engine.parallel.launch import RankEnv, rank_config, torchrun_env
from grokd.engine.parallel.worker import run_worker
from grokd.engine.sampling_params import SamplingParams

BLOCKS = {0: 40, 1: 24}  # each rank's own pool size: both must end up with 24


def _config(model: Path, rank: int, expert_parallel: bool) -> EngineConfig:
    return EngineConfig(
        model=ModelLoadConfig(model=str(model), dtype="float32"),
        cache=CacheConfig(block_size=4, num_blocks=BLOCKS[rank]),
        scheduler=SchedulerConfig(max_num_batched_tokens=16, max_num_seqs=4),
        parallel=ParallelConfig(tensor_parallel_size=2, enable_expert_parallel=expert_parallel),
    )


def _rank(group: DistGroup, model: Path, prompts: list[list[int]]) -> dict:
    out: dict = {}
    for ep in (False, True):
        config = _config(model, group.rank, ep)
        if group.rank != 0:
            with pytest.raises(RuntimeError, match="only rank 0 sends"):
                StepChannel(group).send_step([])
            out[ep] = {"steps": run_worker(config, group)}
            continue
        eng = LLMEngine.from_config(config, group=group)
        params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=1, ignore_eos=True)
        for i, p in enumerate(prompts):
            eng.add_request(f"r{i}", p, params)
        done: dict = {}
        while eng.has_unfinished():
            eng.keepalive()  # interleaved keep-alives must not disturb the steps
            for o in eng.step():
                if o.finished:
                    done[o.request_id] = o
        eng.close()
        out[ep] = {"steps": eng.steps_total, "num_blocks": eng.runner.num_blocks,
                   "tokens": [done[f"r{i}"].outputs[0].token_ids for i in range(len(prompts))],
                   "logprobs": [[lp.logprob for lp in done[f"r{i}"].outputs[0].logprobs]
                                for i in range(len(prompts))]}
    return out


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, grok1_tiny_dir, grok1_tiny_reference) -> list[dict]:
    prompts = [c["prompt"] for c in grok1_tiny_reference["fp32"]["single"]]
    return run_ranks(2, partial(_rank, model=grok1_tiny_dir, prompts=prompts), tmp_path_factory.mktemp("lockstep"))


@pytest.mark.parametrize("ep", [False, True], ids=["tp", "ep"])
def test_rank0_engine_reproduces_reference(ranks, grok1_tiny_reference, ep) -> None:
    cases = grok1_tiny_reference["fp32"]["single"]
    got = ranks[0][ep]
    assert got["tokens"] == [c["greedy"] for c in cases]
    for case, lps in zip(cases, got["logprobs"], strict=True):
        ref = torch.tensor(case["logits"][-1], dtype=torch.float64).log_softmax(-1)
        assert lps[0] == pytest.approx(ref[case["greedy"][0]].item(), abs=2e-3)


@pytest.mark.parametrize("ep", [False, True], ids=["tp", "ep"])
def test_worker_ran_every_step_then_stopped(ranks, ep) -> None:
    assert ranks[0][ep]["num_blocks"] == min(BLOCKS.values())
    # chunked prefills (16-token budget) then decodes: several steps, each run on both ranks
    assert ranks[0][ep]["steps"] > 8
    assert ranks[1][ep]["steps"] == ranks[0][ep]["steps"]


def test_torchrun_env() -> None:
    assert torchrun_env({}) is None
    env = torchrun_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "MASTER_ADDR": "h", "MASTER_PORT": "1"})
    assert env == RankEnv(3, 8, 3, "env://")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        torchrun_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="out of range"):
        torchrun_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "h", "MASTER_PORT": "1"})


def test_rank_config_checks_world_and_picks_the_gpu() -> None:
    config = EngineConfig(model=ModelLoadConfig(device="cuda", dtype="float32"),
                          parallel=ParallelConfig(tensor_parallel_size=8))
    assert rank_config(config, 8, 5).model.device == "cuda:5"
    with pytest.raises(ValueError, match="tensor_parallel_size is 8 but the world has 16 ranks"):
        rank_config(config, 16, 0)
    cpu = dataclasses.replace(config, model=ModelLoadConfig(device="cpu", dtype="float32"))
    assert rank_config(cpu, 8, 5).model.device == "cpu"
