"""The Grok-2 release layout reader on the fixture: detection, rank files concatenated in rank
order on the right dimension, lazy slices reading only the rank files they cover, and the
messages for an incomplete or inconsistent release."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from grokd.weights import load
from grokd.weights.checkpoint import CheckpointError
from grokd.weights.lazy import ReadLog
from grokd.weights.load import detect_format
from grokd.weights.tp_release import read_tp_release, split_dim

W1 = "model.layers.1.block_sparse_moe.experts.3.w1.weight"
W2 = "model.layers.1.block_sparse_moe.experts.3.w2.weight"


def part(root: Path, number: int, rank: int, name: str) -> torch.Tensor:
    with safe_open(str(root / f"pytorch_model-{number:05d}-TP-{rank:03d}.safetensors"), framework="pt") as f:
        return f.get_tensor(name)


def test_detected_and_streamed_whole(grok2_tiny_dir: Path) -> None:
    assert detect_format(grok2_tiny_dir) == "tp-release"
    ckpt = load(grok2_tiny_dir)
    assert (ckpt.format, ckpt.architecture, ckpt.tokenizer.kind) == ("tp-release", "grok-2", "tiktoken")
    tensors = dict(ckpt.tensors())
    assert len(tensors) == 3 + 2 * (3 + 8 * 3 + 4 + 4 + 1)
    assert tensors["lm_head.weight"].shape == (512, 128) and tensors["model.embed_tokens.weight"].shape == (512, 128)
    assert split_dim(W1) == 0 and split_dim(W2) == 1
    assert torch.equal(tensors[W1], torch.cat([part(grok2_tiny_dir, 6, r, W1) for r in range(8)], dim=0))
    assert torch.equal(tensors[W2], torch.cat([part(grok2_tiny_dir, 7, r, W2) for r in range(8)], dim=1))
    assert tensors[W1].shape == (64, 128) and tensors[W2].shape == (128, 64)


def test_lazy_slices_read_only_what_they_cover(grok2_tiny_dir: Path) -> None:
    log = ReadLog()
    lazy = dict(read_tp_release(grok2_tiny_dir, log).lazy_tensors())
    full = dict(load(grok2_tiny_dir).tensors())
    assert log.bytes == 0 and lazy[W1].shape == (64, 128)
    assert torch.equal(lazy[W1][8:16], full[W1][8:16])  # exactly rank file 001's part
    assert (log.bytes, log.reads) == (8 * 128 * 2, 1)
    assert torch.equal(lazy[W2][:, 20:44], full[W2][:, 20:44])  # parts of ranks 2..5
    assert log.reads == 1 + 4 and log.bytes == 8 * 128 * 2 + 128 * 24 * 2
    assert torch.equal(lazy[W2].materialize(), full[W2])


def copy_release(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_missing_rank_file_is_named(grok2_tiny_dir: Path, tmp_path: Path) -> None:
    root = copy_release(grok2_tiny_dir, tmp_path / "g2")
    (root / "pytorch_model-00007-TP-005.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"file number 00007 has rank files .* not a complete run"):
        load(root)


def test_inconsistent_part_is_named(grok2_tiny_dir: Path, tmp_path: Path) -> None:
    root = copy_release(grok2_tiny_dir, tmp_path / "g2")
    path = root / "pytorch_model-00006-TP-002.safetensors"
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors[W1] = tensors[W1][:, :100].contiguous()
    save_file(tensors, str(path))
    with pytest.raises(CheckpointError, match=r"TP-002\.safetensors: .*w1\.weight part has shape \(8, 100\)"):
        load(root)


def test_tokenizer_flag_takes_a_tok_json(grok2_tiny_dir: Path) -> None:
    from grokd.weights.load import tokenizer_source

    for given in (grok2_tiny_dir, grok2_tiny_dir / "tokenizer.tok.json"):
        src = tokenizer_source(given)
        assert (src.kind, src.path) == ("tiktoken", grok2_tiny_dir / "tokenizer.tok.json")
