"""GGUF fast path (own header parser, torch dequantisers) and the load cache (weights.load_cache)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as QT
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize

from grokd.weights import gguf_reader, load_cache
from grokd.weights.gguf_reader import read_gguf

HIDDEN, HEADS, FFN = 64, 2, 256
TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a", "b", "ab", "Ġ", "Ġa", "é", "日本"]


def write_gguf(path: Path, seed: int = 0) -> Path:
    """A one-layer llama GGUF: Q4_1/Q4_0/Q8_0/F16/F32 tensors, a Q6_K one (gguf.quants path)."""
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(256)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(1)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(HEADS)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(TOKENS)
    w.add_token_types([3, 3, 3] + [1] * (len(TOKENS) - 3))
    w.add_token_scores([float(-i) for i in range(len(TOKENS))])
    w.add_token_merges(["a b", "Ġ a"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template("{{ messages[0]['content'] }}")

    def f(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    w.add_tensor("token_embd.weight", quantize(f(len(TOKENS), HIDDEN), QT.Q8_0), raw_dtype=QT.Q8_0)
    w.add_tensor("blk.0.attn_norm.weight", f(HIDDEN))
    w.add_tensor("blk.0.ffn_norm.weight", f(HIDDEN))
    w.add_tensor("blk.0.attn_q.weight", quantize(f(HIDDEN, HIDDEN), QT.Q4_1), raw_dtype=QT.Q4_1)
    w.add_tensor("blk.0.attn_k.weight", quantize(f(HIDDEN, HIDDEN), QT.Q4_0), raw_dtype=QT.Q4_0)
    w.add_tensor("blk.0.attn_v.weight", f(HIDDEN, HIDDEN).astype(np.float16))
    w.add_tensor("blk.0.attn_output.weight", quantize(f(HIDDEN, HIDDEN), QT.Q4_1), raw_dtype=QT.Q4_1)
    w.add_tensor("blk.0.ffn_gate.weight", quantize(f(FFN, HIDDEN), QT.Q8_0), raw_dtype=QT.Q8_0)
    w.add_tensor("blk.0.ffn_up.weight", quantize(f(FFN, HIDDEN), QT.Q4_1), raw_dtype=QT.Q4_1)
    # Q6_K (no quantizer in gguf): random blocks with a sane fp16 scale at the end of each block
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[QT.Q6_K]
    raw = rng.integers(0, 256, size=(HIDDEN, FFN // block_elems, block_bytes), dtype=np.uint8)
    raw[..., -2:] = (
        np.full((HIDDEN, FFN // block_elems), 0.01, np.float16).view(np.uint8).reshape(HIDDEN, -1, 2)
    )
    w.add_tensor("blk.0.ffn_down.weight", raw.reshape(HIDDEN, -1), raw_dtype=QT.Q6_K)
    w.add_tensor("output_norm.weight", f(HIDDEN))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def gguf_file(tmp_path) -> Path:
    return write_gguf(tmp_path / "tiny.gguf")


def materialise(ckpt) -> dict[str, torch.Tensor]:
    return {name: t.clone() for name, t in ckpt.tensors()}


def assert_same_checkpoint(a, b) -> None:
    assert a.architecture == b.architecture
    assert a.config == b.config
    assert a.tokenizer.fields == b.tokenizer.fields
    assert a.chat_template == b.chat_template
    assert a.fingerprint == b.fingerprint
    ta, tb = materialise(a), materialise(b)
    assert list(ta) == list(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype == torch.float32
        assert torch.equal(ta[name].view(torch.int32), tb[name].view(torch.int32)), name


# ---- cold path: own parser and dequantisers agree with the gguf package ------------------------


@pytest.mark.parametrize("qtype", [QT.F32, QT.F16, QT.BF16, QT.Q4_0, QT.Q4_1, QT.Q8_0, QT.Q6_K])
def test_dequantize_is_bit_identical_to_gguf(qtype) -> None:
    rng = np.random.default_rng(int(qtype))
    rows, cols = 8, 512
    if qtype == QT.F32:
        raw = rng.standard_normal((rows, cols)).astype(np.float32).view(np.uint8)
    elif qtype == QT.F16:
        raw = rng.standard_normal((rows, cols)).astype(np.float16).view(np.uint8)
    elif qtype == QT.BF16:
        raw = quantize(rng.standard_normal((rows, cols)).astype(np.float32), QT.BF16).view(np.uint8)
    elif qtype == QT.Q6_K:
        block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, size=(rows, cols // block_elems, block_bytes), dtype=np.uint8)
        raw[..., -2:] = np.full(raw.shape[:2], 0.01, np.float16).view(np.uint8).reshape(rows, -1, 2)
        raw = raw.reshape(rows, -1)
    else:
        x = rng.standard_normal((rows, cols)).astype(np.float32) * 3
        x[0, :32] = 0.0  # an all-zero block (d == 0)
        raw = quantize(x, qtype)
    want = np.asarray(gguf_dequantize(raw.view(np.uint8) if qtype != QT.F32 else raw.view(np.float32), qtype))
    got = gguf_reader.dequantize(raw.reshape(-1), int(qtype), (rows, cols))
    assert got.dtype == torch.float32 and tuple(got.shape) == (rows, cols)
    np.testing.assert_array_equal(
        got.numpy().view(np.uint32), want.astype(np.float32).reshape(rows, cols).view(np.uint32)
    )


def test_parser_matches_gguf_reader(gguf_file) -> None:
    reader = gguf.GGUFReader(gguf_file)
    want = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    parsed = gguf_reader._open(gguf_file)
    assert parsed.meta == want
    assert [t.name for t in parsed.tensors] == [t.name for t in reader.tensors]
    for mine, theirs in zip(parsed.tensors, reader.tensors, strict=True):
        assert mine.qtype == int(theirs.tensor_type)
        assert mine.shape == tuple(int(d) for d in reversed(theirs.shape))
        assert bytes(mine.data) == bytes(np.asarray(theirs.data).view(np.uint8).reshape(-1))


def test_fast_path_matches_gguf_reader_path(gguf_file, monkeypatch) -> None:
    fast = read_gguf(gguf_file, cache_dir=None)
    monkeypatch.setattr(gguf_reader, "_open", gguf_reader._open_with_gguf)
    slow = read_gguf(gguf_file, cache_dir=None)
    assert_same_checkpoint(fast, slow)


def test_default_model_parser_matches_gguf_reader(smollm2_gguf) -> None:
    reader = gguf.GGUFReader(smollm2_gguf)
    want = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    assert gguf_reader._open(smollm2_gguf).meta == want


# ---- the load cache ----------------------------------------------------------------------------


def test_cache_hit_is_identical_to_a_cold_load(gguf_file, tmp_path) -> None:
    cache = tmp_path / "cache"
    cold = read_gguf(gguf_file, cache_dir=cache)
    assert not list(cache.glob("*.safetensors"))  # written only once the tensors were streamed
    materialise(cold)
    (entry,) = cache.glob("*.safetensors")
    assert load_cache.lookup(cache, load_cache.CacheKey.of(gguf_file)) is not None
    warm = read_gguf(gguf_file, cache_dir=cache)
    assert_same_checkpoint(cold, warm)
    assert_same_checkpoint(read_gguf(gguf_file, cache_dir=None), warm)
    # the tokenizer built from cached fields is the same tokenizer
    from grokd.engine.hf_tokenizer import HFTokenizer

    a, b = HFTokenizer.from_source(cold.tokenizer), HFTokenizer.from_source(warm.tokenizer)
    for text in ("ab a<|im_end|>", "Ġa é 日本"):
        assert a.encode(text) == b.encode(text)
    assert a.eos_token_ids == b.eos_token_ids and a.chat_template == b.chat_template


def test_warm_load_does_not_parse_dequantise_or_hash(gguf_file, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    materialise(read_gguf(gguf_file, cache_dir=cache))

    def boom(*a, **k):
        raise AssertionError("cold path used on a cache hit")

    monkeypatch.setattr(gguf_reader, "_open", boom)
    monkeypatch.setattr(gguf_reader, "dequantize", boom)
    monkeypatch.setattr(gguf_reader, "file_sha256", boom)
    materialise(read_gguf(gguf_file, cache_dir=cache))


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty", "bad-meta"])
def test_corrupt_entry_is_ignored_and_rewritten(gguf_file, tmp_path, caplog, damage) -> None:
    cache = tmp_path / "cache"
    reference = read_gguf(gguf_file, cache_dir=None)
    materialise(read_gguf(gguf_file, cache_dir=cache))
    (entry,) = cache.glob("*.safetensors")
    data = entry.read_bytes()
    if damage == "garbage":
        entry.write_bytes(b"\x00\xffnot a safetensors file" * 10)
    elif damage == "truncate":
        entry.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        entry.write_bytes(b"")
    else:  # a valid safetensors file whose metadata is not ours
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, str(entry), metadata={"magic": "something-else"})
    with caplog.at_level(logging.WARNING, logger="grokd.weights.load_cache"):
        ckpt = read_gguf(gguf_file, cache_dir=cache)
    assert "ignoring unreadable entry" in caplog.text
    assert_same_checkpoint(reference, ckpt)  # streams (and so rewrites) the entry
    assert load_cache.lookup(cache, load_cache.CacheKey.of(gguf_file)) is not None
    assert [p.name for p in cache.iterdir()] == [entry.name]  # no temporary files left behind


def test_key_changes_when_the_file_changes(gguf_file, tmp_path) -> None:
    cache = tmp_path / "cache"
    materialise(read_gguf(gguf_file, cache_dir=cache))
    key = load_cache.CacheKey.of(gguf_file)
    st = gguf_file.stat()
    os.utime(gguf_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    touched = load_cache.CacheKey.of(gguf_file)
    assert touched != key
    assert load_cache.lookup(cache, touched) is None  # stale
    # replace the file with different weights: the next load sees them, not the cached ones
    write_gguf(gguf_file, seed=1)
    changed = read_gguf(gguf_file, cache_dir=cache)
    assert_same_checkpoint(read_gguf(gguf_file, cache_dir=None), changed)
    assert len(list(cache.glob("*.safetensors"))) == 1  # the entry was replaced, not added to
    assert load_cache.lookup(cache, load_cache.CacheKey.of(gguf_file)) is not None


def test_partial_stream_writes_nothing(gguf_file, tmp_path) -> None:
    cache = tmp_path / "cache"
    it = read_gguf(gguf_file, cache_dir=cache).tensors()
    next(it)
    it.close()
    assert not cache.exists()  # store() makes the directory only once the whole stream was read


def test_size_cap_and_switch(gguf_file, tmp_path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("GROKD_CACHE_MAX_BYTES", "1000")
    materialise(read_gguf(gguf_file, cache_dir=cache))
    assert not cache.exists()
    monkeypatch.delenv("GROKD_CACHE_MAX_BYTES")
    monkeypatch.setenv("GROKD_CACHE_DIR", str(cache))
    monkeypatch.setenv("GROKD_LOAD_CACHE", "0")
    assert load_cache.cache_dir() is None
    materialise(read_gguf(gguf_file))
    assert not cache.exists()
    monkeypatch.delenv("GROKD_LOAD_CACHE")
    assert load_cache.cache_dir() is None  # opt-in: off unless asked for
    monkeypatch.setenv("GROKD_LOAD_CACHE", "1")
    assert load_cache.cache_dir() == cache
    materialise(read_gguf(gguf_file))
    assert len(list(cache.glob("*.safetensors"))) == 1


def test_default_cache_dir_is_outside_the_repo(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("GROKD_CACHE_DIR", raising=False)
    monkeypatch.setenv("GROKD_LOAD_CACHE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert load_cache.cache_dir() == tmp_path / "xdg" / "grokd"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert load_cache.cache_dir() == Path.home() / ".cache" / "grokd"
    monkeypatch.setenv("GROKD_CACHE_DIR", "")
    assert load_cache.cache_dir() is None


def test_unwritable_cache_dir_only_warns(gguf_file, tmp_path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="grokd.weights.load_cache"):
        tensors = materialise(read_gguf(gguf_file, cache_dir=blocker / "cache"))
    assert tensors and "could not write" in caplog.text


def test_default_model_warm_load_matches_cold(smollm2_gguf, tmp_path) -> None:
    cache = tmp_path / "cache"
    cold = read_gguf(smollm2_gguf, cache_dir=cache)
    cold_tensors = materialise(cold)
    warm = read_gguf(smollm2_gguf, cache_dir=cache)
    assert warm.config == cold.config and warm.fingerprint == cold.fingerprint
    assert warm.tokenizer.fields == cold.tokenizer.fields
    for name, t in warm.tensors():
        assert torch.equal(t, cold_tensors[name]), name
