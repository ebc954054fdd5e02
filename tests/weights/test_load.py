"""load(): layout detection, HF safetensors directories (single / sharded), tokenizer discovery."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from grokd.weights import load
from grokd.weights.checkpoint import CheckpointError
from grokd.weights.load import detect_format
from grokd.weights.safetensors_reader import architecture_of


def test_detects_each_layout(grok1_tiny_dir, grok1_tiny_hf_dir, tmp_path):
    assert detect_format(grok1_tiny_dir) == "release"
    assert detect_format(grok1_tiny_dir / "ckpt-0") == "release"
    assert detect_format(grok1_tiny_hf_dir) == "safetensors"
    assert detect_format(grok1_tiny_hf_dir / "model.safetensors") == "safetensors"
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert detect_format(tmp_path / "m.gguf") == "gguf"
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="unknown layout"):
        load(tmp_path / "empty")
    with pytest.raises(CheckpointError, match="no such file"):
        load(tmp_path / "missing")


def test_sharded_hf_dir_with_tokenizer_and_chat_template(grok1_tiny_hf_dir, grok1_tokenizer_path, tmp_path):
    tensors = load_file(str(grok1_tiny_hf_dir / "model.safetensors"))
    names = sorted(tensors)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    weight_map = {}
    for i, part in enumerate(halves):
        fname = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(tmp_path / fname))
        weight_map.update({n: fname for n in part})
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copyfile(grok1_tiny_hf_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "tokenizer.model").symlink_to(grok1_tokenizer_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    ckpt = load(tmp_path)
    assert (ckpt.format, ckpt.architecture, ckpt.chat_template) == ("safetensors", "grok-1", "{{ messages }}")
    assert ckpt.tokenizer.kind == "sentencepiece" and ckpt.tokenizer.path == tmp_path / "tokenizer.model"
    got = dict(ckpt.tensors())
    assert got.keys() == tensors.keys() and all(torch.equal(got[n], tensors[n]) for n in names)
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="model-00002-of-00002"):
        load(tmp_path)


def test_tokenizer_override_and_hf_kind(grok1_tiny_dir, grok1_tiny_hf_dir, grok1_tokenizer_path, tmp_path):
    ckpt = load(grok1_tiny_dir, tokenizer=str(grok1_tokenizer_path))
    assert ckpt.tokenizer.kind == "sentencepiece"
    (tmp_path / "tokenizer.json").write_text("{}")
    assert load(grok1_tiny_hf_dir, tokenizer=tmp_path).tokenizer.kind == "hf"


def test_architecture_of():
    assert architecture_of({"architectures": ["Grok1ModelForCausalLM"]}) == "grok-1"
    assert architecture_of({"model_type": "llama"}) == "llama"
    assert architecture_of({"architectures": ["LlamaForCausalLM"]}) == "llama"
    with pytest.raises(CheckpointError):
        architecture_of({})


def test_fingerprint_is_stable(grok1_tiny_dir, grok1_tiny_hf_dir):
    assert load(grok1_tiny_dir).fingerprint == load(grok1_tiny_dir).fingerprint
    assert load(grok1_tiny_dir).fingerprint != load(grok1_tiny_hf_dir).fingerprint
