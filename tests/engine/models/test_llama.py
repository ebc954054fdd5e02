"""Llama parity: the SmolLM2 GGUF through our model (paged KV cache, incremental decode, batched
sequences) vs. Hugging Face transformers' GGUF loader, in float32."""

from __future__ import annotations

import pytest
import torch

from grokd.engine.chat_template import render_chat
from grokd.engine.models.llama import LlamaForCausalLM
from grokd.kernels.arith import ceil_div
from grokd.kernels.attention import kv_cache_shape
from grokd.kernels.cpu_linear import Int8PanelWeight, PanelWeight
from grokd.kernels.linear import OneDNNWeight, pack_weight
from grokd.kernels.metadata import AttentionMetadata

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a concise assistant."},
        {"role": "user", "content": "List three colors."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello! How can I help you today?"},
        {"role": "user", "content": "Write a haiku about the sea, 2024 edition."},
    ],
]
NEW_TOKENS = 10
BLOCK_SIZE = 16
ATOL = 1e-3


@pytest.fixture(scope="module")
def ours(smollm2_checkpoint) -> LlamaForCausalLM:
    return LlamaForCausalLM.from_checkpoint(smollm2_checkpoint, torch.float32, "auto", "cpu")


@pytest.fixture(scope="module")
def reference(smollm2_gguf):
    """transformers' Llama with weights from its GGUF loader (dequantise + q/k un-permute).

    ``from_pretrained(gguf_file=...)`` needs ``accelerate`` only to place weights; the GGUF
    conversion itself is ``load_gguf_checkpoint``, which we call directly.
    """
    import transformers
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = transformers.AutoConfig.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)
    with torch.device("meta"):  # skip random init of 135M parameters; weights are assigned below
        model = transformers.LlamaForCausalLM(config).eval()
    tensors = load_gguf_checkpoint(str(smollm2_gguf), return_tensors=True, model_to_load=model)["tensors"]
    result = model.load_state_dict(tensors, strict=False, assign=True)
    assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys
    model.tie_weights()
    rotary_cls = type(model.model.rotary_emb)
    model.model.rotary_emb = rotary_cls(config=config)  # its buffers are computed, not loaded
    assert not any(t.is_meta for t in [*model.parameters(), *model.buffers()])
    return model


def test_config_and_attrs(ours: LlamaForCausalLM) -> None:
    assert (ours.num_layers, ours.num_kv_heads, ours.head_dim) == (30, 3, 64)
    assert ours.vocab_size == 49152 and ours.max_position_embeddings == 8192
    assert ours.lm_head is None  # tied


def test_parity_with_transformers(ours, reference, smollm2_tokenizer, hf_smollm2_tokenizer) -> None:
    prompts = []
    for messages in PROMPTS:
        text = render_chat(messages, template=smollm2_tokenizer.chat_template, tokenizer=smollm2_tokenizer)
        ids = smollm2_tokenizer.encode(text)
        assert ids == hf_smollm2_tokenizer.encode(text, add_special_tokens=False)
        prompts.append(ids)

    # Our side: all three prompts in one flat prefill batch, then batched one-token decode steps.
    n_seqs = len(prompts)
    max_len = max(len(p) for p in prompts) + NEW_TOKENS
    blocks_per_seq = ceil_div(max_len, BLOCK_SIZE)
    num_blocks = n_seqs * blocks_per_seq + 1
    # Interleaved, non-contiguous block tables exercise the paging (block 0 left unused).
    tables = [[1 + s + n_seqs * b for b in range(blocks_per_seq)] for s in range(n_seqs)]
    kv = [
        torch.zeros(kv_cache_shape(num_blocks, BLOCK_SIZE, ours.num_kv_heads, ours.head_dim))
        for _ in range(ours.num_layers)
    ]
    seqs = [list(p) for p in prompts]
    ours_logits: list[list[torch.Tensor]] = [[] for _ in range(n_seqs)]
    query_lens = [len(p) for p in prompts]
    with torch.no_grad():
        for _step in range(NEW_TOKENS):
            seq_lens = [len(s) for s in seqs]
            ids = torch.tensor([t for s, q in zip(seqs, query_lens, strict=True) for t in s[len(s) - q :]])
            pos = torch.tensor(
                [i for s, q in zip(seqs, query_lens, strict=True) for i in range(len(s) - q, len(s))]
            )
            meta = AttentionMetadata.build(query_lens, seq_lens, tables, BLOCK_SIZE)
            hidden = ours(ids, pos, kv, meta)
            last = meta.query_start_loc[1:] - 1
            logits = ours.compute_logits(hidden[last])
            assert logits.dtype == torch.float32 and logits.shape == (n_seqs, ours.vocab_size)
            for i in range(n_seqs):
                ours_logits[i].append(logits[i])
                seqs[i].append(int(logits[i].argmax()))
            query_lens = [1] * n_seqs

    # Reference: transformers' own KV-cached greedy decode of each prompt separately.
    max_diff = 0.0
    for i, prompt in enumerate(prompts):
        ref_seq = list(prompt)
        past, step_ids = None, ref_seq
        with torch.no_grad():
            for step in range(NEW_TOKENS):
                out = reference(torch.tensor([step_ids]), cache=past, use_cache=True)
                ref = out.logits[0, -1].float()
                past = out.cache
                max_diff = max(max_diff, (ours_logits[i][step] - ref).abs().max().item())
                ref_seq.append(int(ref.argmax()))
                step_ids = ref_seq[-1:]
        assert ref_seq == seqs[i], f"prompt {i}: greedy tokens differ"
    assert max_diff < ATOL, f"max |dlogits| = {max_diff}"
    print(f"max |dlogits| vs transformers: {max_diff:.2e}")


def _chat_prompt_logits(model: LlamaForCausalLM, tokenizer, last: int) -> torch.Tensor:
    """Logits of the last ``last`` positions of a one-shot prefill of the first chat prompt."""
    text = render_chat(PROMPTS[0], template=tokenizer.chat_template, tokenizer=tokenizer)
    ids = tokenizer.encode(text)
    meta = AttentionMetadata.build([len(ids)], [len(ids)], [[0, 1, 2, 3]], BLOCK_SIZE)
    shape = kv_cache_shape(4, BLOCK_SIZE, model.num_kv_heads, model.head_dim)
    kv = [torch.zeros(shape, dtype=model.dtype) for _ in range(model.num_layers)]
    with torch.no_grad():
        return model.compute_logits(model(torch.tensor(ids), torch.arange(len(ids)), kv, meta)[-last:])


def test_bfloat16_runs_and_agrees_on_top_token(smollm2_checkpoint, ours, smollm2_tokenizer) -> None:
    bf16 = LlamaForCausalLM.from_checkpoint(smollm2_checkpoint, torch.bfloat16, "auto", "cpu")
    outs = [_chat_prompt_logits(model, smollm2_tokenizer, 1) for model in (bf16, ours)]
    assert outs[0].dtype == torch.float32
    assert int(outs[0].argmax()) == int(outs[1].argmax())
    if _packs_bf16():  # bf16 projections and the tied head run packed
        assert _is_packed(bf16.layers[0].mlp.gate_up_weight) and _is_packed(bf16.output_weight)
        assert not _is_packed(ours.layers[0].mlp.gate_up_weight)  # float32 stays dense


def _is_packed(weight) -> bool:
    """In one of ``kernels.linear.pack_weight``'s forms: the C kernels' panels or oneDNN's layout."""
    return isinstance(weight, PanelWeight | OneDNNWeight)


def _packs_bf16() -> bool:
    """Whether this CPU tier packs bf16 weights at all: its C kernels take them (every x86 tier but
    generic), or oneDNN does (avx512 and up); on the generic tier they stay plain tensors."""
    return _is_packed(pack_weight(torch.zeros(32, 2, dtype=torch.bfloat16)))


def test_int8_weights_agree_with_float32_on_the_top_tokens(smollm2_checkpoint, ours, smollm2_tokenizer) -> None:
    """Weight-only int8 (``--weights-dtype int8``) over bf16 activations: quarter of fp32's bytes,
    same greedy choice on a chat prompt, and logits close to the float model's."""
    from grokd.kernels.linear import Int8Weight

    int8 = LlamaForCausalLM.from_checkpoint(smollm2_checkpoint, torch.bfloat16, "int8", "cpu")
    int8_forms = (Int8Weight, Int8PanelWeight)  # as quantised, or packed for the CPU kernel
    assert isinstance(int8.layers[0].mlp.down_weight, int8_forms)
    assert isinstance(int8.output_weight, int8_forms)
    outs = [_chat_prompt_logits(model, smollm2_tokenizer, 3) for model in (int8, ours)]
    assert outs[0].argmax(-1).tolist() == outs[1].argmax(-1).tolist()
    cos = torch.nn.functional.cosine_similarity(outs[0], outs[1], dim=-1)
    assert cos.min().item() > 0.99, cos


def test_rejects_bad_weights_dtype(smollm2_checkpoint) -> None:
    with pytest.raises(ValueError, match="weights_dtype"):
        LlamaForCausalLM.from_checkpoint(smollm2_checkpoint, torch.float32, "int4", "cpu")


def test_hf_safetensors_dir_matches_transformers(tmp_path, smollm2_tokenizer) -> None:
    """A tiny random Llama (untied lm_head, GQA, rope_theta) saved by transformers as safetensors,
    opened through weights.load and the engine loader's tokenizer path, matches transformers."""
    import transformers

    from grokd.engine.hf_tokenizer import HFTokenizer
    from grokd.weights.load import load

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=smollm2_tokenizer.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_theta=5000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    ref = transformers.LlamaForCausalLM(config).eval()
    ref.save_pretrained(tmp_path)
    smollm2_tokenizer._tok.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(
        '{"eos_token": "<|im_end|>", "bos_token": "<|im_start|>"}'
    )

    ckpt = load(tmp_path)
    assert ckpt.architecture == "llama" and ckpt.tokenizer is not None
    model = LlamaForCausalLM.from_checkpoint(ckpt, torch.float32, "auto", "cpu")
    assert model.lm_head is not None
    tok = HFTokenizer.from_source(ckpt.tokenizer)
    ids = tok.encode("The quick brown fox jumps over the lazy dog. 42!")
    kv = [torch.zeros(kv_cache_shape(4, BLOCK_SIZE, 2, 16)) for _ in range(model.num_layers)]
    meta = AttentionMetadata.build([len(ids)], [len(ids)], [[3, 1]], BLOCK_SIZE)
    with torch.no_grad():
        ours_logits = model.compute_logits(model(torch.tensor(ids), torch.arange(len(ids)), kv, meta))
        ref_logits = ref(torch.tensor([ids])).logits[0].float()
    torch.testing.assert_close(ours_logits, ref_logits, atol=1e-4, rtol=1e-4)

    # bf16: an untied head is packed into ``output_weight`` and its dense copy freed
    bf16 = LlamaForCausalLM.from_checkpoint(ckpt, torch.bfloat16, "auto", "cpu")
    if _packs_bf16():
        assert bf16.lm_head is None and _is_packed(bf16.output_weight)
        assert not any(n.startswith("lm_head") for n, _ in bf16.named_parameters())
    kv16 = [torch.zeros(kv_cache_shape(4, BLOCK_SIZE, 2, 16), dtype=torch.bfloat16) for _ in range(bf16.num_layers)]
    with torch.no_grad():
        bf16_logits = bf16.compute_logits(bf16(torch.tensor(ids), torch.arange(len(ids)), kv16, meta))
    assert torch.nn.functional.cosine_similarity(bf16_logits, ref_logits, dim=-1).min().item() > 0.99


def test_rope_settings_both_config_styles_and_llama3_scaling() -> None:
    from grokd.engine.models.llama import RotaryEmbedding, rope_settings

    assert rope_settings({"rope_theta": 500.0}) == (500.0, None)
    assert rope_settings({"rope_parameters": {"rope_theta": 7.0, "rope_type": "default"}}) == (7.0, None)
    llama3 = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    }
    theta, scaling = rope_settings({"rope_parameters": {"rope_theta": 500000.0, **llama3}})
    assert theta == 500000.0 and scaling["rope_type"] == "llama3"
    rope = RotaryEmbedding(64, theta, 16, scaling)
    # transformers' own llama3 frequencies as the reference
    import transformers
    cfg = transformers.LlamaConfig(
        hidden_size=256,
        num_attention_heads=4,
        max_position_embeddings=131072,
        rope_parameters={"rope_theta": 500000.0, **llama3},
    )
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    torch.testing.assert_close(rope.inv_freq, ref.float())
    # llama.cpp's rope_freqs divisors (as the GGUF reader names them) rescale the tables
    base = rope.inv_freq.clone()
    rope.set_inv_freq(base / 2)
    torch.testing.assert_close(rope.cos[3, :32], torch.cos(3 * base / 2))
    with pytest.raises(NotImplementedError, match="yarn"):
        RotaryEmbedding(64, 1e4, 16, {"rope_type": "yarn", "factor": 4.0})
