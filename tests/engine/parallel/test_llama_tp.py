"""The Llama family sharded as Grok-1 is: random tiny Llamas from safetensors at 2 and 4 gloo
ranks (KV heads split, and replicated when there are more ranks than KV heads; a vocabulary that
does not divide evenly; tied and untied heads; attention biases), and the default model,
SmolLM2-135M from its GGUF, at 3 ranks (its 9 query and 3 KV heads): logits as the single-rank
model's, identical greedy tokens, each rank holding only its slices and reading only those."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
from grok1_steps import prefill_all
from safetensors.torch import load_file, save_file
from test_grok1_tp import PAGE, greedy
from tp_harness import run_ranks

from grokd.engine.config import ParallelConfig
from grokd.engine.models.llama import LlamaForCausalLM
from grokd.engine.parallel.group import DistGroup
from grokd.engine.parallel.shard import TensorParallel
from grokd.weights import load
from grokd.weights.lazy import ReadLog
from grokd.weights.safetensors_reader import read_safetensors

PROMPTS = [[1, 5, 9, 200, 31, 7], [3, 4], [17, 240, 2, 2, 99, 100, 101, 5, 6, 8, 11]]
STEPS = 6
# float32 partial sums re-added across ranks: a different association of the same sums
TOL = 2e-5
TINY = {  # name: (config overrides, tensor-parallel sizes)
    "gqa": ({"num_attention_heads": 8, "num_key_value_heads": 4, "tie_word_embeddings": True}, (2, 4)),
    "kv2": ({"num_attention_heads": 8, "num_key_value_heads": 2, "tie_word_embeddings": False,
             "attention_bias": True}, (4,)),
}


def _tiny_llama(dst: Path, overrides: dict) -> Path:
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=250, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                      max_position_embeddings=256, **overrides)
    model = transformers.LlamaForCausalLM(config)
    with torch.no_grad():  # larger than the default init, so that the logits tell the ranks apart
        for p in model.parameters():
            p.mul_(4.0) if p.dim() > 1 else p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(dst)
    if overrides.get("attention_bias"):  # q/k/v biases only, as Qwen2-style checkpoints have them
        file = str(dst / "model.safetensors")
        save_file({n: t for n, t in load_file(file).items() if not n.endswith("o_proj.bias")}, file)
    return dst


def _run(model: LlamaForCausalLM, prompts: list[list[int]]) -> dict:
    return {"logits": prefill_all(model, prompts, torch.float32),  # type: ignore[arg-type]
            "greedy": greedy(model, prompts, STEPS, torch.float32)}  # type: ignore[arg-type]


def _tiny_rank(world: DistGroup, dirs: dict[str, Path]) -> dict:
    groups = {4: world, 2: world.split(2)}
    out: dict = {}
    for name, (_, sizes) in TINY.items():
        if world.rank == 0:
            out[(name, 1)] = _run(LlamaForCausalLM.from_checkpoint(load(dirs[name])), PROMPTS)
        for tp in sizes:
            if world.rank >= tp:
                continue
            log = ReadLog()
            par = TensorParallel(groups[tp], ParallelConfig(tp))
            model = LlamaForCausalLM.from_checkpoint(read_safetensors(dirs[name], log), tp=par)
            out[(name, tp)] = _run(model, PROMPTS) | {
                "bytes": log.bytes, "reads": log.reads, "kv_heads": model.num_kv_heads,
                "share": sum(p.numel() * p.element_size() for p in model.parameters())}
    return out


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory) -> list[dict]:
    tmp = tmp_path_factory.mktemp("llama_tp")
    dirs = {name: _tiny_llama(tmp / name, cfg) for name, (cfg, _) in TINY.items()}
    return run_ranks(4, partial(_tiny_rank, dirs=dirs), tmp / "out")


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("name", "tp"), [(n, tp) for n, (_, sizes) in TINY.items() for tp in sizes])
def test_tiny_llama_sharded_matches_single_rank(tiny_runs, name, tp) -> None:
    single, res = tiny_runs[0][(name, 1)], tiny_runs[0][(name, tp)]
    scale = max(x.abs().max().item() for x in single["logits"])
    assert scale > 1.0  # logits large enough for the comparison to mean something
    assert _max_diff(res["logits"], single["logits"]) < TOL * scale
    assert res["greedy"] == single["greedy"]
    heads = TINY[name][0]["num_key_value_heads"]
    for r in range(tp):
        rank = tiny_runs[r][(name, tp)]
        assert _max_diff(rank["logits"], res["logits"]) == 0.0  # every rank has the full logits
        assert rank["kv_heads"] == max(1, heads // tp)
        assert rank["share"] <= rank["bytes"] <= rank["share"] + PAGE * rank["reads"]


def _smollm2_rank(world: DistGroup, gguf: Path) -> dict:
    par = TensorParallel(world, ParallelConfig(3))
    model = LlamaForCausalLM.from_checkpoint(load(gguf), tp=par)
    out = _run(model, PROMPTS) | {"kv_heads": model.num_kv_heads, "heads": model.num_heads,
                                  "share": sum(p.numel() * p.element_size() for p in model.parameters())}
    if world.rank == 0:
        out["single"] = _run(LlamaForCausalLM.from_checkpoint(load(gguf)), PROMPTS)
    return out


def test_default_model_at_three_ranks_matches_single_rank(smollm2_gguf, tmp_path) -> None:
    runs = run_ranks(3, partial(_smollm2_rank, gguf=smollm2_gguf), tmp_path)
    single = runs[0]["single"]
    assert _max_diff(runs[0]["logits"], single["logits"]) < 1e-3  # logits of ~30 after 30 layers
    assert runs[0]["greedy"] == single["greedy"]
    assert [(r["heads"], r["kv_heads"]) for r in runs] == [(3, 1)] * 3
    assert all(_max_diff(r["logits"], runs[0]["logits"]) == 0.0 for r in runs)
    assert max(r["share"] for r in runs) < 0.4 * 4 * 135e6  # a third of the float32 model, and the norms
