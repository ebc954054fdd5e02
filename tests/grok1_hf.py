"""Builds the Hugging Face port layout of a Grok-1 release (as vLLM reads it) from ``ckpt-0/``.

The port (hpcai-tech names) is ``config.json`` + one ``model.safetensors``: every linear weight in
torch ``[out, in]`` layout as bfloat16 ``bf16(int8 × scale)``, the release's effective weight;
embeddings, norm scales and the router stay float32 (the router transposed to ``[out, in]``).
Written independently of ``grokd convert`` (its own names and dequantisation), so comparing the
two checks the converter.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from grokd.weights.checkpoint import QuantizedWeight
from grokd.weights.release import ReleaseReader, release_config

# Haiku parameter path inside a decoder layer -> the port's name inside ``model.layers.N``
LAYER_NAMES = {
    "moe/linear/w": "moe_block.experts.{e}.linear.weight",
    "moe/linear_1/w": "moe_block.experts.{e}.linear_1.weight",
    "moe/linear_v/w": "moe_block.experts.{e}.linear_v.weight",
    "multi_head_attention/key/w": "attn.k_proj.weight",
    "multi_head_attention/linear/w": "attn.o_proj.weight",
    "multi_head_attention/query/w": "attn.q_proj.weight",
    "multi_head_attention/value/w": "attn.v_proj.weight",
    "rms_norm/scale": "pre_attn_norm.scale",
    "rms_norm_1/scale": "post_attn_norm.scale",
    "rms_norm_2/scale": "pre_moe_norm.scale",
    "rms_norm_3/scale": "post_moe_norm.scale",
    "router/w": "moe_block.gate.weight",
}
TOP_NAMES = {
    "language_model/in_out_embed/embeddings": "model.embed_tokens.weight",
    "language_model/rms_norm/scale": "model.norm.scale",
}


def effective_weight(q: QuantizedWeight) -> torch.Tensor:
    """``bf16(int8 × scale)`` of one ``[in, out]`` matrix, transposed to ``[out, in]``. Scale row ``g``
    covers input rows ``g·in/G ... (g+1)·in/G - 1``; the float32 product of an int8 and a bf16 is
    exact, so rounding it once to bf16 is the release's bf16 multiply."""
    rows = q.weight.shape[0] // q.scales.shape[0]
    scales = q.scales.float().repeat_interleave(rows, dim=0)
    return (q.weight.float() * scales).to(torch.bfloat16).t().contiguous()


def port_tensors(release_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the release at ``release_dir`` under its port name, in the port's layout."""
    reader = ReleaseReader(release_dir, release_config(release_dir))
    out: dict[str, torch.Tensor] = {}
    for entry in reader.entries:
        raw = reader.read_raw(entry)
        if entry.haiku_path in TOP_NAMES:
            assert isinstance(raw, torch.Tensor)
            out[TOP_NAMES[entry.haiku_path]] = raw
            continue
        _, layer_part, rest = entry.haiku_path.split("/", 2)
        prefix = f"model.layers.{int(layer_part.removeprefix('decoder_layer_'))}."
        if rest.startswith("moe/linear"):
            assert isinstance(raw, QuantizedWeight)
            for e in range(raw.weight.shape[0]):
                out[prefix + LAYER_NAMES[rest].format(e=e)] = effective_weight(
                    QuantizedWeight(raw.weight[e], raw.scales[e]))
        elif isinstance(raw, QuantizedWeight):
            out[prefix + LAYER_NAMES[rest]] = effective_weight(raw)
        elif raw.ndim == 2:  # the router, [in, out] in the release
            out[prefix + LAYER_NAMES[rest]] = raw.t().contiguous()
        else:
            out[prefix + LAYER_NAMES[rest]] = raw
    return out


def write_hf_port(release_dir: Path, dst: Path) -> Path:
    """Write the port of ``release_dir`` into ``dst`` (``config.json`` + ``model.safetensors``)."""
    dst.mkdir(parents=True, exist_ok=True)
    save_file(port_tensors(release_dir), str(dst / "model.safetensors"))
    shutil.copyfile(release_dir / "config.json", dst / "config.json")
    return dst
