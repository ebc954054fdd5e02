"""Lazy views of the release pickles (located by opcode scan, memory-mapped) and of safetensors:
same names and values as ``tensors()``, slices read alone, hostile pickles refused unrun."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from grokd.weights import load
from grokd.weights.checkpoint import CheckpointError, QuantizedWeight
from grokd.weights.lazy import LazyQuantized, LazyTensor, ReadLog
from grokd.weights.pickle_layout import MemmapArray, read_layout
from grokd.weights.release import read_release
from grokd.weights.safetensors_reader import read_safetensors

from .helpers import release_copy, replace_file


def _whole(value):
    if isinstance(value, LazyQuantized):
        return QuantizedWeight(value.weight[()], value.scales[()])
    assert isinstance(value, LazyTensor)
    return value[()]


def _same(a, b) -> bool:
    if isinstance(a, QuantizedWeight):
        return isinstance(b, QuantizedWeight) and torch.equal(a.weight, b.weight) and torch.equal(a.scales, b.scales)
    return a.dtype == b.dtype and torch.equal(a, b)


@pytest.mark.parametrize("layout", ["release", "hf"])
def test_lazy_tensors_equal_tensors(layout, grok1_tiny_dir, grok1_tiny_hf_dir):
    ckpt = load(grok1_tiny_dir if layout == "release" else grok1_tiny_hf_dir)
    eager = list(ckpt.tensors())
    lazy = list(ckpt.lazy_tensors())
    assert [n for n, _ in lazy] == [n for n, _ in eager] and len(eager) > 50
    for (name, value), (_, ref) in zip(lazy, eager, strict=True):
        assert tuple(value.shape) == tuple(ref.shape), name
        assert _same(_whole(value), ref), name


def test_release_slices_read_only_their_bytes(grok1_tiny_dir):
    log = ReadLog()
    lazy = dict(read_release(grok1_tiny_dir, read_log=log).lazy_tensors())
    headers = log.bytes
    assert 0 < headers < 300 * 26  # the opcode scan: a few hundred bytes per file, no payloads
    eager = dict(load(grok1_tiny_dir).tensors())
    # an expert's int8 down projection: rows 43:86 of [344, 256] (one of 8 scale blocks)
    down = lazy["model.layers.1.moe_block.experts.5.linear_1.weight"]
    ref = eager["model.layers.1.moe_block.experts.5.linear_1.weight"]
    assert torch.equal(down.weight[43:86, :], ref.weight[43:86]) and torch.equal(down.scales[1:2], ref.scales[1:2])
    # a float tensor seen transposed: the router [8, 256] from the file's [256, 8]
    router = lazy["model.layers.0.moe_block.gate.weight"]
    assert torch.equal(router[2:4, 10:20], ref_r := eager["model.layers.0.moe_block.gate.weight"][2:4, 10:20])
    assert ref_r.shape == (2, 10)
    assert log.bytes - headers == 43 * 256 + 256 * 2 + 2 * 10 * 4
    assert log.reads - 26 == 3


def test_hf_slices_read_only_their_bytes(grok1_tiny_hf_dir):
    log = ReadLog()
    lazy = dict(read_safetensors(grok1_tiny_hf_dir, read_log=log).lazy_tensors())
    assert log.bytes == 0
    q = lazy["model.layers.0.attn.q_proj.weight"]  # bf16 [256, 256]
    full = dict(load(grok1_tiny_hf_dir).tensors())["model.layers.0.attn.q_proj.weight"]
    assert torch.equal(q[32:64, :], full[32:64]) and (log.bytes, log.reads) == (32 * 256 * 2, 1)


def test_layout_matches_restricted_unpickler_for_every_file(grok1_tiny_dir):
    from grokd.weights.release import restricted_load

    files = sorted((grok1_tiny_dir / "ckpt-0").iterdir())
    for path in files:
        layout, obj = read_layout(path, str(path)), restricted_load(path)
        pairs = layout.items() if isinstance(layout, dict) else [("", layout)]
        for key, lay in pairs:
            ref = getattr(obj, key) if key else obj
            got = MemmapArray(lay).read(())
            ref_t = torch.from_numpy(np.ascontiguousarray(ref).view(np.int16)).view(torch.bfloat16) \
                if ref.dtype.itemsize == 2 and ref.dtype.kind == "V" else torch.from_numpy(np.ascontiguousarray(ref))
            assert lay.shape == ref.shape and torch.equal(got, ref_t.to(got.dtype)), (path, key)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("payload", [
    "evil",
    pickle.dumps(np.array([1, 2], dtype=object)),
    pickle.dumps(np.arange(4, dtype=">f4")),
    pickle.dumps(np.asfortranarray(np.ones((2, 3), dtype=np.float32))),
    pickle.dumps([1, 2, 3]),
    pickle.dumps(np.ones((1024, 256), dtype=np.float32))[:-200],
])
def test_hostile_or_odd_pickles_are_refused_without_running(payload, grok1_tiny_dir, tmp_path):
    marker = tmp_path / "pwned"
    if payload == "evil":
        payload = pickle.dumps(_Evil(marker))
    root = release_copy(grok1_tiny_dir, tmp_path / "rel")
    bad = replace_file(root, 0, payload)
    with pytest.raises(CheckpointError) as err:
        list(read_release(root).lazy_tensors())
    assert str(bad) in str(err.value)
    assert not marker.exists()
