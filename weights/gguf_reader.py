"""GGUF reader: one llama.cpp model file -> a :class:`Checkpoint` in Hugging Face names.

Tensors are dequantised to float32 as they are streamed (``gguf.quants.dequantize`` handles F32,
F16, BF16, Q8_0, Q4_0, Q4_1, Q5_*, the K-quants and more), so models see plain dense weights.
llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` so that RoPE rotates adjacent
pairs (interleaved layout); our Llama uses the HF half-split layout, so those rows are permuted
back here. The tokenizer is not built here: its metadata goes into ``TokenizerSource.fields``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weights.checkpoint import Checkpoint, TokenizerSource

# GGUF tensor name (after ``blk.N.``) -> HF suffix (after ``model.layers.N.``).
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    # llama.cpp's RoPE frequency divisors (Llama 3.1 scaling); engine.models.llama applies them.
    "rope_freqs.weight": "model.rope_freqs",
}
_BLOCK_RE = re.compile(r"^blk\.(\d+)\.([a-z_]+)\.(weight|bias)$")

# GGUF ``{arch}.*`` metadata key -> HF config key.
_CONFIG_KEYS = {
    "context_length": "max_position_embeddings",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "feed_forward_length": "intermediate_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "attention.key_length": "head_dim",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
    "vocab_size": "vocab_size",
}

# tokenizer.ggml.* metadata key -> TokenizerSource.fields key.
_TOKENIZER_KEYS = {
    "model": "model",
    "pre": "pre",
    "tokens": "tokens",
    "merges": "merges",
    "token_type": "token_type",
    "scores": "scores",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "eot_token_id": "eot_token_id",
    "eom_token_id": "eom_token_id",
    "unknown_token_id": "unk_token_id",
    "padding_token_id": "pad_token_id",
    "add_bos_token": "add_bos_token",
    "add_eos_token": "add_eos_token",
    "add_space_prefix": "add_space_prefix",
}


def read_gguf(path: str | os.PathLike[str]) -> Checkpoint:
    """Open a GGUF file: parse metadata now, stream dequantised tensors on demand."""
    import gguf  # local: keeps `grokd --help` fast

    path = Path(path)
    reader = gguf.GGUFReader(path)
    meta = _metadata(reader)
    arch = meta.get("general.architecture", "llama")
    config = _config(meta, arch, reader)

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        return _iter_tensors(reader, config)

    tok_fields = {
        dst: meta[f"tokenizer.ggml.{src}"]
        for src, dst in _TOKENIZER_KEYS.items()
        if f"tokenizer.ggml.{src}" in meta
    }
    if "tokenizer.chat_template" in meta:
        tok_fields["chat_template"] = meta["tokenizer.chat_template"]
    return Checkpoint(
        path=path,
        format="gguf",
        architecture=arch,
        config=config,
        tensors=tensors,
        tokenizer=TokenizerSource(kind="gguf", path=path, fields=tok_fields),
        chat_template=meta.get("tokenizer.chat_template"),
        fingerprint=file_sha256(path),
    )


def _metadata(reader: Any) -> dict[str, Any]:
    """All key/value fields as python values (skipping the header counters)."""
    out: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        out[key] = field.contents()
    return out


def _config(meta: dict[str, Any], arch: str, reader: Any) -> dict[str, Any]:
    """HF-style config from ``{arch}.*`` keys; fills the values HF derives rather than stores."""
    config: dict[str, Any] = {
        "model_type": arch,
        "architectures": ["LlamaForCausalLM"] if arch == "llama" else [],
    }
    for src, dst in _CONFIG_KEYS.items():
        key = f"{arch}.{src}"
        if key in meta:
            config[dst] = meta[key]
    config.setdefault("num_key_value_heads", config.get("num_attention_heads"))
    if "head_dim" not in config and "hidden_size" in config and "num_attention_heads" in config:
        config["head_dim"] = config["hidden_size"] // config["num_attention_heads"]
    if "vocab_size" not in config and "tokenizer.ggml.tokens" in meta:
        config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    scaling_type = meta.get(f"{arch}.rope.scaling.type")
    if scaling_type and scaling_type != "none":
        config["rope_scaling"] = {
            "rope_type": scaling_type,
            "factor": meta.get(f"{arch}.rope.scaling.factor", 1.0),
        }
    names = {t.name for t in reader.tensors}
    config["tie_word_embeddings"] = "output.weight" not in names
    for key in ("bos_token_id", "eos_token_id", "padding_token_id"):
        if f"tokenizer.ggml.{key}" in meta:
            config[key.replace("padding_", "pad_")] = meta[f"tokenizer.ggml.{key}"]
    return config


def hf_name(gguf_name: str) -> str | None:
    """The HF name of a GGUF tensor, or None for tensors we do not use."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    m = _BLOCK_RE.match(gguf_name)
    if m is None or m.group(2) not in _LAYER_NAMES:
        raise ValueError(f"unsupported GGUF tensor {gguf_name!r}")
    return f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}.{m.group(3)}"


def unpermute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation: per head, rows are stored as (pair, 2) and we want
    (2, pair) so the first half of each head holds the 'real' parts, as HF's rotate_half expects."""
    head_dim = w.shape[0] // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)


def _iter_tensors(reader: Any, config: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    from gguf.quants import dequantize

    for t in reader.tensors:
        name = hf_name(t.name)
        if name is None:
            continue
        # GGUF lists dims fastest-first; torch wants [out, in].
        shape = tuple(int(d) for d in reversed(t.shape))
        arr = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
            arr = unpermute_rope_rows(arr, config["num_attention_heads"])
        elif name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
            arr = unpermute_rope_rows(arr, config["num_key_value_heads"])
        if not arr.flags.writeable or not arr.flags.c_contiguous:
            arr = np.array(arr, order="C")  # memmapped F32 tensors are read-only views
        yield name, torch.from_numpy(arr)


def file_sha256(path: Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) so reloads do not rehash ~100 MB+."""
    st = path.stat()
    return _sha256_cached(str(path.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
    return h.hexdigest()
