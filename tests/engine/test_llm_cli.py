"""Offline LLM API, the loader's registries, and `grokd generate` on the grok1-tiny fixture."""

import json

import pytest

from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig
from grokd.engine.llm import LLM
from grokd.engine.loader import MODEL_REGISTRY, TOKENIZER_REGISTRY, load_model_and_tokenizer
from grokd.engine.sampling_params import SamplingParams


def tiny_config(path, **model_kw) -> EngineConfig:
    return EngineConfig(
        model=ModelLoadConfig(model=str(path), dtype="float32", weights_dtype="float32", **model_kw),
        cache=CacheConfig(num_blocks=128),
    )


def test_loader_resolves_fixture_and_registries(grok1_tiny_dir, tiny_model, one_thread):
    model, tok, ckpt = load_model_and_tokenizer(tiny_config(grok1_tiny_dir).model)
    assert ckpt.architecture == "grok-1" and type(model).__name__ == "Grok1ForCausalLM"
    assert tok is None  # the fixture ships no tokenizer: the engine works on ids
    assert set(MODEL_REGISTRY) >= {"grok-1", "llama"}
    assert set(TOKENIZER_REGISTRY) >= {"sentencepiece", "hf", "gguf"}


def test_loader_tokenizer_override(grok1_tiny_dir, grok1_tokenizer_path, tiny_model, one_thread):
    _, tok, _ = load_model_and_tokenizer(
        tiny_config(grok1_tiny_dir, tokenizer=str(grok1_tokenizer_path)).model
    )
    assert tok.vocab_size == 131072 and tok.eos_token_ids == [2]


def test_llm_generate_matches_reference_in_prompt_order(grok1_tiny_dir, grok1_tiny_reference, tiny_model, one_thread):
    cases = grok1_tiny_reference["fp32"]["single"]
    llm = LLM(tiny_config(grok1_tiny_dir))
    outs = llm.generate(
        [c["prompt"] for c in cases], SamplingParams(temperature=0, max_tokens=8), use_tqdm=False
    )
    assert [o.outputs[0].token_ids for o in outs] == [c["greedy"] for c in cases]
    single = llm.generate(cases[1]["prompt"], SamplingParams(temperature=0, max_tokens=3), use_tqdm=False)
    assert single[0].outputs[0].token_ids == cases[1]["greedy"][:3]
    with pytest.raises(ValueError, match="tokenizer"):
        llm.generate("text needs a tokenizer", use_tqdm=False)


def test_llm_feeds_bounded_queue(grok1_tiny_dir, tiny_model, one_thread):
    cfg = tiny_config(grok1_tiny_dir)
    cfg.scheduler.max_queued_requests = 2
    llm = LLM(cfg)
    outs = llm.generate(
        [[5, 6, i + 7] for i in range(7)], SamplingParams(temperature=0, max_tokens=2), use_tqdm=False
    )
    assert len(outs) == 7 and all(o.finished for o in outs)


def test_cli_generate_json(grok1_tiny_dir, grok1_tiny_reference, capsys, tiny_model, one_thread):
    from grokd.server.cli import main

    case = grok1_tiny_reference["fp32"]["single"][0]
    ids = ",".join(map(str, case["prompt"]))
    argv = ["generate", "--model", str(grok1_tiny_dir), "--prompt-ids", ids, "--max-tokens", "8"]
    rc = main([*argv, "--dtype", "float32", "--weights-dtype", "float32", "--json", "--logprobs", "2"])
    assert rc == 0
    body = json.loads(capsys.readouterr().out)
    assert body["outputs"][0]["token_ids"] == case["greedy"]
    assert body["outputs"][0]["finish_reason"] == "length"
    assert len(body["outputs"][0]["logprobs"][0]["top"]) == 2


def test_cli_generate_fp8_weights(grok1_tiny_dir, grok1_tiny_reference, capsys, one_thread):
    """``--weights-dtype fp8`` end to end: the engine's first token is the fp8 model's own argmax
    and its logprob that model's (not the reference's: fp8 is lossy)."""
    import torch
    from grok1_steps import prefill_all

    from grokd.engine.models.grok1 import Grok1ForCausalLM
    from grokd.server.cli import main
    from grokd.weights import load

    case = grok1_tiny_reference["fp32"]["single"][0]
    argv = ["generate", "--model", str(grok1_tiny_dir), "--prompt-ids", ",".join(map(str, case["prompt"])),
            "--max-tokens", "2", "--dtype", "float32", "--weights-dtype", "fp8", "--json", "--logprobs", "1"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)["outputs"][0]
    model = Grok1ForCausalLM.from_checkpoint(load(grok1_tiny_dir), dtype=torch.float32, weights_dtype="fp8")
    last = prefill_all(model, [case["prompt"]], torch.float32)[0][-1].double().log_softmax(-1)
    assert out["token_ids"][0] == int(last.argmax())
    assert abs(out["logprobs"][0]["logprob"] - last.max().item()) < 1e-3
