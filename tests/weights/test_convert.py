"""The converter: streamed shards load back to the same logits; re-runs skip finished shards."""

from __future__ import annotations

import json

import pytest
import torch

from grokd.engine.models.grok1 import Grok1ForCausalLM
from grokd.weights import load
from grokd.weights.checkpoint import QuantizedWeight
from grokd.weights.convert import convert

from .helpers import release_copy


def _logits(path, prompt):
    from tests.engine.models.test_grok1 import prefill_all

    model = Grok1ForCausalLM.from_checkpoint(load(path), dtype=torch.float32)
    return prefill_all(model, [prompt], torch.float32)[0]


@pytest.mark.parametrize("weights_dtype", ["int8", "bfloat16"])
def test_converted_checkpoint_gives_same_logits(grok1_tiny_dir, grok1_tiny_reference, tmp_path, weights_dtype):
    dst = tmp_path / "out"
    res = convert(grok1_tiny_dir, dst, weights_dtype, progress=False)
    assert len(res.written) == 3 and not res.skipped
    ckpt = load(dst)
    assert (ckpt.format, ckpt.architecture) == ("safetensors", "grok-1")
    named = dict(ckpt.tensors())
    q = named["model.layers.0.moe_block.experts.3.linear_1.weight"]
    if weights_dtype == "int8":
        assert isinstance(q, QuantizedWeight) and q.weight.dtype == torch.int8 and q.scales.shape == (8, 256)
    else:
        assert q.dtype == torch.bfloat16 and q.shape == (256, 344)
    prompt = grok1_tiny_reference["fp32"]["single"][0]["prompt"]
    got, want = _logits(dst, prompt), _logits(grok1_tiny_dir, prompt)
    if weights_dtype == "int8":
        assert torch.equal(got, want)  # same int8 bytes, same kernels
    else:  # same effective weights; only the matmul layout differs
        torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    manifest = json.loads((dst / "grokd-manifest.json").read_text())
    assert set(manifest["shards"]) == set(json.loads((dst / "model.safetensors.index.json").read_text())
                                          ["weight_map"].values())
    assert ckpt.fingerprint and ckpt.fingerprint != load(grok1_tiny_dir).fingerprint


def test_bf16_conversion_equals_hf_port(grok1_tiny_dir, grok1_tiny_hf_dir, tmp_path):
    convert(grok1_tiny_dir, tmp_path / "out", "bfloat16", progress=False)
    ours, theirs = dict(load(tmp_path / "out").tensors()), dict(load(grok1_tiny_hf_dir).tensors())
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_rerun_skips_finished_shards_and_redoes_missing(grok1_tiny_dir, tmp_path):
    src = release_copy(grok1_tiny_dir, tmp_path / "rel")
    (src / "tokenizer.model").write_bytes(b"not really")
    dst = tmp_path / "out"
    first = convert(src, dst, progress=False)
    assert (dst / "tokenizer.model").read_bytes() == b"not really"
    mtimes = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.safetensors")}
    again = convert(src, dst, progress=False)
    assert again.written == [] and again.skipped == first.written
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in dst.glob("*.safetensors")}
    # an interrupted run: a shard never finished (only a .partial left behind)
    lost = first.written[1]
    (dst / lost).rename(dst / (lost + ".partial"))
    third = convert(src, dst, progress=False)
    assert third.written == [lost] and len(third.skipped) == 2
    assert not (dst / (lost + ".partial")).exists()


def test_convert_cli(grok1_tiny_dir, tmp_path, capsys):
    import argparse

    from grokd.weights.convert import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["convert", str(grok1_tiny_dir), str(tmp_path / "o"), "--no-progress"])
    assert args.func(args) == 0
    assert "wrote 3 shard(s)" in capsys.readouterr().out
    assert load(tmp_path / "o").config["grokd_quantization"]["method"] == "int8-release"
