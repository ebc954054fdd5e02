"""The release reader: restricted unpickling, and errors that name the file and the tensor."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from grokd.weights import load
from grokd.weights.checkpoint import CheckpointError, QuantizedWeight
from grokd.weights.release import GROK1_RELEASE_CONFIG, release_config, release_entries, restricted_load

from .helpers import release_copy, replace_file


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_refuses_pickle_calling_os_system_without_running_it(grok1_tiny_dir, tmp_path):
    marker = tmp_path / "pwned"
    root = release_copy(grok1_tiny_dir, tmp_path / "rel")
    bad = replace_file(root, 1, pickle.dumps(_Evil(marker)))
    ckpt = load(root)
    with pytest.raises(CheckpointError) as err:
        list(ckpt.tensors())
    assert str(bad) in str(err.value) and "system" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("payload", [
    pickle.dumps(eval),
    pickle.dumps(np.array([1, 2], dtype=object)),
    pickle.dumps(np.ma.masked_array([1.0])),
])
def test_refuses_other_globals_and_object_arrays(tmp_path, payload):
    p = tmp_path / "t"
    p.write_bytes(payload)
    with pytest.raises((CheckpointError, pickle.UnpicklingError)) as err:
        restricted_load(p)
    assert "refusing" in str(err.value)


def test_truncated_file_names_file_and_tensor(grok1_tiny_dir, tmp_path):
    root = release_copy(grok1_tiny_dir, tmp_path / "rel")
    data = (grok1_tiny_dir / "ckpt-0" / "tensor00003_000").read_bytes()
    bad = replace_file(root, 3, data[: len(data) // 2])
    with pytest.raises(CheckpointError) as err:
        list(load(root).tensors())
    msg = str(err.value)
    assert str(bad) in msg and "decoder_layer_0/moe/linear_1/w" in msg and "truncated" in msg


def test_missing_tensor_names_file_and_tensor(grok1_tiny_dir, tmp_path):
    root = release_copy(grok1_tiny_dir, tmp_path / "rel")
    (root / "ckpt-0" / "tensor00025_000").unlink()
    with pytest.raises(CheckpointError) as err:
        load(root)
    assert "tensor00025_000" in str(err.value) and "decoder_layer_1/router/w" in str(err.value)


def test_shape_mismatch_names_file_and_tensor(grok1_tiny_dir, tmp_path):
    root = release_copy(grok1_tiny_dir, tmp_path / "rel")
    bad = replace_file(root, 9, pickle.dumps(np.ones(255, dtype=np.float32)))
    with pytest.raises(CheckpointError) as err:
        list(load(root).tensors())
    msg = str(err.value)
    assert str(bad) in msg and "decoder_layer_0/rms_norm/scale" in msg and "(255,)" in msg


def test_quantized_shape_mismatch_from_config(grok1_tiny_dir, tmp_path):
    root = release_copy(grok1_tiny_dir, tmp_path / "rel", with_config=False)
    (root / "config.json").write_text((grok1_tiny_dir / "config.json").read_text().replace('"intermediate_size": 344',
                                                                                         '"intermediate_size": 352'))
    with pytest.raises(CheckpointError) as err:
        list(load(root).tensors())
    assert "tensor00002_000" in str(err.value) and "moe/linear/w" in str(err.value)


def test_release_order_names_and_layouts(grok1_tiny_dir):
    ckpt = load(grok1_tiny_dir)
    assert (ckpt.format, ckpt.architecture) == ("release", "grok-1")
    named = dict(ckpt.tensors())
    assert len(named) == 2 + 2 * (3 * 8 + 4 + 4 + 1)
    q = named["model.layers.0.attn.q_proj.weight"]
    assert isinstance(q, QuantizedWeight) and q.weight.dtype == torch.int8 and q.scales.dtype == torch.bfloat16
    assert named["model.layers.1.attn.o_proj.weight"].scales.shape == (8, 256)
    assert named["model.layers.0.moe_block.experts.7.linear_1.weight"].scales.shape == (8, 256)
    assert named["model.layers.0.moe_block.gate.weight"].shape == (8, 256)
    assert named["model.embed_tokens.weight"].shape == (1024, 256)


def test_builtin_config_and_string_sorted_layer_order(tmp_path):
    assert release_config(tmp_path) == GROK1_RELEASE_CONFIG
    entries = release_entries(GROK1_RELEASE_CONFIG)
    assert len(entries) == 770
    starts = {e.haiku_path.split("/")[1]: e.index for e in entries if e.haiku_path.endswith("moe/linear/w")}
    assert (starts["decoder_layer_0"], starts["decoder_layer_1"], starts["decoder_layer_10"],
            starts["decoder_layer_2"], starts["decoder_layer_63"]) == (2, 14, 26, 146, 722)
