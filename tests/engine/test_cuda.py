"""The engine on CUDA: the grok1-tiny golden fixture through ``LLMEngine`` on the GPU must give
the official reference's greedy tokens and logprobs, as on the CPU; seeded sampling must repeat;
a dense Llama must agree with its CPU twin. Skipped without a CUDA device (tests/conftest.py)."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import assert_idle, run_all

from grokd import weights
from grokd.engine.config import CacheConfig, EngineConfig, ModelLoadConfig, SchedulerConfig
from grokd.engine.llm_engine import LLMEngine
from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.engine.sampling_params import SamplingParams

pytestmark = pytest.mark.gpu


def cuda_engine(model_dir, dtype: str, weights_dtype: str, num_blocks: int = 256,
                kernel_backend: str = "auto") -> LLMEngine:
    ckpt = weights.load(model_dir)
    model = Grok1ForCausalLM.from_checkpoint(ckpt, dtype=getattr(torch, dtype), weights_dtype=weights_dtype,
                                             device="cuda", kernel_backend=kernel_backend)
    cfg = EngineConfig(
        model=ModelLoadConfig(model=str(model_dir), dtype=dtype, weights_dtype=weights_dtype, device="cuda"),
        cache=CacheConfig(block_size=4, num_blocks=num_blocks),
        scheduler=SchedulerConfig(max_num_batched_tokens=512, max_num_seqs=64),
    )
    return LLMEngine(cfg, model, None, checkpoint=ckpt)


@pytest.mark.parametrize(("kernel_backend", "weights_dtype"),
                         [("torch", "float32"), ("triton", "float32"), ("triton", "auto")])
def test_fp32_greedy_tokens_and_logprobs_match_reference_on_cuda(grok1_tiny_dir, grok1_tiny_reference,
                                                                  kernel_backend, weights_dtype):
    """Through the PyTorch kernels (eager) and the Triton ones (decode from CUDA graphs), on the
    dequantised weights and on the release's int8."""
    eng = cuda_engine(grok1_tiny_dir, "float32", weights_dtype, kernel_backend=kernel_backend)
    assert eng.runner.kv_caches[0].is_cuda and next(eng.runner.model.parameters()).is_cuda
    cases = grok1_tiny_reference["fp32"]["single"]
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5, prompt_logprobs=3)
    # every prompt twice, all at once: one batched prefill, then batched decode rows
    for rep in range(2):
        for i, case in enumerate(cases):
            eng.add_request(f"r{rep}-{i}", case["prompt"], params)
    done = run_all(eng)
    for rep in range(2):
        for i, case in enumerate(cases):
            out = done[f"r{rep}-{i}"]
            assert out.outputs[0].token_ids == case["greedy"]
            ref_lp = torch.tensor(case["logits"]).log_softmax(-1)
            first = out.outputs[0].logprobs[0]
            assert first.logprob == pytest.approx(ref_lp[-1, case["greedy"][0]].item(), abs=2e-3)
            assert [t for t, _ in first.top] == ref_lp[-1].topk(5).indices.tolist()
            for p in range(1, len(case["prompt"])):
                lp = out.prompt_logprobs[p]
                assert lp.logprob == pytest.approx(ref_lp[p - 1, case["prompt"][p]].item(), abs=2e-3)
    if kernel_backend == "triton":
        assert eng.runner.graphs is not None and eng.runner.graphs.num_graphs >= 1
    assert_idle(eng)


def test_release_int8_bf16_on_cuda_follows_the_bf16_reference(grok1_tiny_dir, grok1_tiny_reference):
    """The release's int8 weights with bf16 activations (the real Grok-1 serving mode): the first
    greedy token matches the bf16 reference wherever the reference's top-1 margin is clear."""
    eng = cuda_engine(grok1_tiny_dir, "bfloat16", "auto")
    cases = grok1_tiny_reference["bf16"]["single"]
    for i, case in enumerate(cases):
        eng.add_request(f"b{i}", case["prompt"], SamplingParams(temperature=0.0, max_tokens=4))
    done = run_all(eng)
    checked = 0
    for i, case in enumerate(cases):
        toks = done[f"b{i}"].outputs[0].token_ids
        assert len(toks) == 4
        if case["greedy_top1_margin"][0] > 1.0:
            assert toks[0] == case["greedy"][0]
            checked += 1
    assert checked > 0


def test_seeded_sampling_repeats_on_cuda(grok1_tiny_dir, grok1_tiny_reference):
    prompt = grok1_tiny_reference["fp32"]["single"][0]["prompt"]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=12, seed=1234)
    runs = []
    for _ in range(2):
        eng = cuda_engine(grok1_tiny_dir, "float32", "float32")
        eng.add_request("s", prompt, params)
        runs.append(run_all(eng)["s"].outputs[0].token_ids)
    assert runs[0] == runs[1] and len(runs[0]) == 12


def tiny_llama_dir(tmp_path):
    import transformers
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=False,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.parametrize("kv_cache_dtype", ["auto", "int8"])
def test_cuda_graph_decode_matches_eager(tmp_path, kv_cache_dtype):
    """Decode steps replayed from captured graphs give the eager engine's tokens and logprobs,
    over batch sizes that need padding (5 rows -> 8) and contexts crossing block buckets, over a
    float32 pool and an int8 one (dequantized inside the graph)."""
    from grokd.engine.models.llama import LlamaForCausalLM

    path = tiny_llama_dir(tmp_path)
    ckpt = weights.load(path)
    prompts = [torch.randint(0, 512, (n,)).tolist() for n in (3, 17, 40, 64, 90)]
    params = SamplingParams(temperature=0.0, max_tokens=40, logprobs=2, ignore_eos=True)
    outs = []
    for eager in (True, False):
        model = LlamaForCausalLM.from_checkpoint(ckpt, torch.float32, "auto", "cuda")
        cfg = EngineConfig(
            model=ModelLoadConfig(model=str(path), dtype="float32", device="cuda", enforce_eager=eager),
            cache=CacheConfig(block_size=16, num_blocks=64, dtype=kv_cache_dtype),
            scheduler=SchedulerConfig(max_num_seqs=8),
        )
        eng = LLMEngine(cfg, model, None, checkpoint=ckpt)
        assert (eng.runner.graphs is None) == eager
        assert eng.runner.kv_caches[0].dtype == (torch.int8 if kv_cache_dtype == "int8" else torch.float32)
        for i, p in enumerate(prompts):
            eng.add_request(f"r{i}", p, params)
        outs.append(run_all(eng))
        if not eager:
            assert eng.runner.graphs.num_graphs >= 2
        assert_idle(eng)
    for i in range(len(prompts)):
        a, b = outs[0][f"r{i}"].outputs[0], outs[1][f"r{i}"].outputs[0]
        assert a.token_ids == b.token_ids and len(a.token_ids) == 40
        assert [x.logprob for x in a.logprobs] == pytest.approx([x.logprob for x in b.logprobs], abs=1e-3)


def test_moe_model_on_torch_kernels_stays_eager_on_cuda(grok1_tiny_dir):
    """The PyTorch MoE reads expert counts on the host, so it must never be captured; the Triton one
    (the default on CUDA) sorts tokens on the device and is."""
    assert cuda_engine(grok1_tiny_dir, "float32", "float32", kernel_backend="torch").runner.graphs is None
    assert cuda_engine(grok1_tiny_dir, "float32", "float32").runner.graphs is not None


def test_dense_llama_on_cuda_matches_cpu(tmp_path):
    """A tiny random Llama (GQA, untied head) in the HF layout: CUDA logits equal the CPU's in
    float32, and bf16 on CUDA stays close."""
    from grokd.engine.models.llama import LlamaForCausalLM
    from grokd.kernels.attention import kv_cache_shape
    from grokd.kernels.metadata import AttentionMetadata

    ckpt = weights.load(tiny_llama_dir(tmp_path))
    ids = torch.randint(0, 512, (37,))
    logits = {}
    for device, dtype in (("cpu", torch.float32), ("cuda", torch.float32), ("cuda", torch.bfloat16)):
        model = LlamaForCausalLM.from_checkpoint(ckpt, dtype, "auto", device)
        kv = [torch.zeros(kv_cache_shape(8, 16, 2, 16), dtype=dtype, device=device) for _ in range(2)]
        meta = AttentionMetadata.build([37], [37], [[5, 1, 3]], 16, device=device)
        with torch.inference_mode():
            hidden = model(ids.to(device), torch.arange(37, device=device), kv, meta)
            logits[(device, dtype)] = model.compute_logits(hidden).float().cpu()
    ref = logits[("cpu", torch.float32)]
    torch.testing.assert_close(logits[("cuda", torch.float32)], ref, atol=1e-3, rtol=1e-3)
    cos = torch.nn.functional.cosine_similarity(logits[("cuda", torch.bfloat16)], ref, dim=-1)
    assert cos.min().item() > 0.99
