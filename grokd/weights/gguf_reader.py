"""GGUF reader: one llama.cpp model file -> a :class:`Checkpoint` in Hugging Face names.

Tensors are dequantised to float32 as they are streamed (``gguf.quants.dequantize`` handles F32,
F16, BF16, Q8_0, Q4_0, Q4_1, Q5_*, the K-quants and more), so models see plain dense weights.
llama.cpp's converter permutes the rows of ``attn_q``/``attn_k`` so that RoPE rotates adjacent
pairs (interleaved layout); our Llama uses the HF half-split layout, so those rows are permuted
back here. The tokenizer is not built here: its metadata goes into ``TokenizerSource.fields``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from grokd.weights import load_cache
from grokd.weights.checkpoint import Checkpoint, TokenizerSource

log = logging.getLogger(__name__)


class _Default(enum.Enum):
    ENV = enum.auto()  # read_gguf's cache_dir default: take it from the environment


_ENV = _Default.ENV

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


def read_gguf(path: str | os.PathLike[str], *, cache_dir: Path | None | _Default = _ENV) -> Checkpoint:
    """Open a GGUF file: parse metadata now, stream dequantised tensors on demand.

    With a load cache (:mod:`weights.load_cache`; ``cache_dir`` defaults to the environment's), a
    file seen before opens from its cached entry: no parsing, dequantising or hashing. A cold load
    writes the entry once its tensors have been streamed to the end.
    """
    path = Path(path)
    directory = load_cache.cache_dir() if cache_dir is _ENV else cache_dir
    key = load_cache.CacheKey.of(path) if directory is not None else None
    if directory is not None and key is not None:
        entry = load_cache.lookup(directory, key)
        if entry is not None:
            try:
                return _checkpoint(path, entry.meta, entry.tensors)
            except (KeyError, TypeError, ValueError) as exc:
                log.warning("load cache: ignoring entry %s with bad metadata (%s)", entry.path, exc)

    gguf_file = _open(path)
    meta = gguf_file.meta
    arch = meta.get("general.architecture", "llama")
    config = _config(meta, arch, {t.name for t in gguf_file.tensors})
    tok_fields = {
        dst: meta[f"tokenizer.ggml.{src}"]
        for src, dst in _TOKENIZER_KEYS.items()
        if f"tokenizer.ggml.{src}" in meta
    }
    if "tokenizer.chat_template" in meta:
        tok_fields["chat_template"] = meta["tokenizer.chat_template"]
    stored = {
        "architecture": arch,
        "config": config,
        "tokenizer_fields": tok_fields,
        "chat_template": meta.get("tokenizer.chat_template"),
        "fingerprint": file_sha256(path),
    }
    cacheable = (
        directory is not None
        and key is not None
        and 4 * sum(t.n_elements for t in gguf_file.tensors) <= load_cache.max_bytes()
    )

    def tensors() -> Iterator[tuple[str, torch.Tensor]]:
        if not cacheable:
            yield from _iter_tensors(gguf_file.tensors, config)
            return
        kept: list[tuple[str, torch.Tensor]] = []
        for name, tensor in _iter_tensors(gguf_file.tensors, config):
            kept.append((name, tensor))
            yield name, tensor
        # Streamed to the end: store the entry (the model copied the tensors, so these are ours).
        assert directory is not None and key is not None
        load_cache.store(directory, key, stored, kept)

    return _checkpoint(path, stored, tensors)


def _checkpoint(
    path: Path, stored: dict[str, Any], tensors: Callable[[], Iterator[tuple[str, torch.Tensor]]]
) -> Checkpoint:
    return Checkpoint(
        path=path,
        format="gguf",
        architecture=str(stored["architecture"]),
        config=dict(stored["config"]),
        tensors=tensors,
        tokenizer=TokenizerSource(kind="gguf", path=path, fields=dict(stored["tokenizer_fields"])),
        chat_template=stored.get("chat_template"),
        fingerprint=str(stored["fingerprint"]),
    )


def _config(meta: dict[str, Any], arch: str, tensor_names: set[str]) -> dict[str, Any]:
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
    config["tie_word_embeddings"] = "output.weight" not in tensor_names
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


def unpermute_rope_rows(w: Any, n_heads: int) -> Any:
    """Undo llama.cpp's q/k row permutation: per head, rows are stored as (pair, 2) and we want
    (2, pair) so the first half of each head holds the 'real' parts, as HF's rotate_half expects."""
    head_dim = w.shape[0] // n_heads
    rest = w.shape[1:]
    return w.reshape(n_heads, head_dim // 2, 2, *rest).swapaxes(1, 2).reshape(w.shape)  # numpy or torch


@dataclass
class _TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order ([out, in]); GGUF lists dims fastest-first
    qtype: int
    data: np.ndarray  # the raw bytes (uint8, memory-mapped)

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class _GGUFFile:
    meta: dict[str, Any]
    tensors: list[_TensorInfo]


# GGUF metadata value types -> numpy scalar dtypes (little-endian).
_SCALARS: dict[int, np.dtype[Any]] = {
    0: np.dtype("<u1"),
    1: np.dtype("<i1"),
    2: np.dtype("<u2"),
    3: np.dtype("<i2"),
    4: np.dtype("<u4"),
    5: np.dtype("<i4"),
    6: np.dtype("<f4"),
    7: np.dtype("<u1"),  # bool
    10: np.dtype("<u8"),
    11: np.dtype("<i8"),
    12: np.dtype("<f8"),
}
_STRING, _ARRAY, _BOOL = 8, 9, 7


class _Unsupported(Exception):
    pass


def _open(path: Path) -> _GGUFFile:
    """Parse a GGUF file's header (metadata and tensor table); tensor bytes stay memory-mapped.

    Our own parser: ``gguf.GGUFReader`` builds numpy views per element of the ~100k-entry token
    and merge arrays, which takes seconds. What it does not handle (big-endian files, GGUF v1)
    goes through ``GGUFReader``.
    """
    mm = np.memmap(path, mode="r", dtype=np.uint8)
    try:
        return _parse(mm)
    except _Unsupported:
        return _open_with_gguf(path)


def _parse(mm: np.ndarray) -> _GGUFFile:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    buf = memoryview(mm)  # type: ignore[arg-type]
    if bytes(buf[:4]) != b"GGUF":
        raise ValueError("not a GGUF file (bad magic)")
    version = int.from_bytes(buf[4:8], "little")
    if version not in (2, 3):
        raise _Unsupported(f"GGUF version {version}")
    n_tensors = int.from_bytes(buf[8:16], "little")
    n_kv = int.from_bytes(buf[16:24], "little")
    pos = 24

    def uint(size: int) -> int:
        nonlocal pos
        pos += size
        return int.from_bytes(buf[pos - size : pos], "little")

    def string() -> str:
        nonlocal pos
        n = int.from_bytes(buf[pos : pos + 8], "little")
        pos += 8 + n
        return str(buf[pos - n : pos], "utf-8")

    def value(vtype: int) -> Any:
        nonlocal pos
        if vtype == _STRING:
            return string()
        if vtype == _ARRAY:
            itype = uint(4)
            count = uint(8)
            if itype == _STRING:
                return [string() for _ in range(count)]
            if itype == _ARRAY:
                return [value(_ARRAY) for _ in range(count)]
            dt = _SCALARS[itype]
            arr = np.frombuffer(buf, dtype=dt, count=count, offset=pos)
            pos += count * dt.itemsize
            return [bool(v) for v in arr] if itype == _BOOL else arr.tolist()
        dt = _SCALARS[vtype]
        v = np.frombuffer(buf, dtype=dt, count=1, offset=pos)[0].item()
        pos += dt.itemsize
        return bool(v) if vtype == _BOOL else v

    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = string()
        meta[key] = value(uint(4))
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    for _ in range(n_tensors):
        name = string()
        dims = tuple(uint(8) for _ in range(uint(4)))
        qtype = uint(4)
        infos.append((name, dims, qtype, uint(8)))
    align = int(meta.get("general.alignment", 32))
    start = pos + (-pos % align)
    tensors = []
    for name, dims, qtype, offset in infos:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(qtype)]
        nbytes = int(np.prod(dims, dtype=np.int64)) // block * type_size
        begin = start + offset
        if begin + nbytes > len(mm):
            raise ValueError(f"GGUF tensor {name!r} runs past the end of the file")
        tensors.append(_TensorInfo(name, tuple(reversed(dims)), qtype, mm[begin : begin + nbytes]))
    return _GGUFFile(meta, tensors)


def _open_with_gguf(path: Path) -> _GGUFFile:
    import gguf  # local: keeps `grokd --help` fast

    reader = gguf.GGUFReader(path)
    meta = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = [
        _TensorInfo(
            t.name,
            tuple(int(d) for d in reversed(t.shape)),
            int(t.tensor_type),
            np.asarray(t.data).reshape(-1).view(np.uint8),
        )
        for t in reader.tensors
    ]
    return _GGUFFile(meta, tensors)


def _iter_tensors(infos: list[_TensorInfo], config: dict[str, Any]) -> Iterator[tuple[str, torch.Tensor]]:
    for t in infos:
        name = hf_name(t.name)
        if name is None:
            continue
        w = dequantize(t.data, t.qtype, t.shape)
        if name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.q_proj.bias"):
            w = unpermute_rope_rows(w, config["num_attention_heads"]).contiguous()
        elif name.endswith("self_attn.k_proj.weight") or name.endswith("self_attn.k_proj.bias"):
            w = unpermute_rope_rows(w, config["num_key_value_heads"]).contiguous()
        yield name, w


# ggml type ids with a vectorised torch dequantiser below; others go through gguf.quants.
_F32, _F16, _Q4_0, _Q4_1, _Q8_0, _BF16 = 0, 1, 2, 3, 8, 30


def dequantize(raw: np.ndarray, qtype: int, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of ``shape`` (torch order) from one tensor's raw GGUF bytes.

    F32/F16/BF16/Q4_0/Q4_1/Q8_0 are decoded by whole-tensor torch ops (bit-identical to
    ``gguf.quants.dequantize``, which the tests check); other types go through ``gguf.quants``.
    """
    b = torch.from_numpy(np.array(raw, dtype=np.uint8, copy=True).reshape(-1))
    if qtype == _F32:
        return b.view(torch.float32).reshape(shape)
    if qtype == _F16:
        return b.view(torch.float16).float().reshape(shape)
    if qtype == _BF16:
        return b.view(torch.bfloat16).float().reshape(shape)
    if qtype == _Q8_0:
        blocks = b.reshape(-1, 34)
        d = blocks[:, :2].contiguous().view(torch.float16).float()
        return (blocks[:, 2:].contiguous().view(torch.int8).float() * d).reshape(shape)
    if qtype in (_Q4_0, _Q4_1):
        head = 2 if qtype == _Q4_0 else 4
        blocks = b.reshape(-1, head + 16)
        d = blocks[:, :2].contiguous().view(torch.float16).float()
        qs = blocks[:, head:]
        q = torch.cat([qs & 0x0F, qs >> 4], dim=1)
        if qtype == _Q4_0:
            return (d * (q.to(torch.int8) - 8).float()).reshape(shape)
        m = blocks[:, 2:4].contiguous().view(torch.float16).float()
        return (d * q.float() + m).reshape(shape)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    rows = b.numpy().reshape(int(np.prod(shape[:-1], dtype=np.int64)), -1)
    arr = gguf_dequantize(rows, GGMLQuantizationType(qtype))
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).reshape(shape)


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
