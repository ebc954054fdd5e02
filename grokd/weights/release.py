"""Reader for the original Grok-1 release: ``ckpt-0/tensorNNNNN_000`` Haiku pickles.

The pickles are opened with a restricted unpickler: only numpy array reconstruction, plain
numeric dtypes (bfloat16 via ml_dtypes) and the ``__main__.QuantizedWeight8bit`` record resolve;
any other global is refused before anything runs. File ``i`` holds the ``i``-th leaf of the
parameter tree in sorted Haiku-path order (GROK1.md §3.1); each leaf is renamed to the hpcai-tech
HF name. Plain float tensors are transposed to torch ``[out, in]``; int8 weights stay
``QuantizedWeight`` in the release ``[in, out]`` layout, and expert stacks ``[E, in, out]`` are
streamed per expert as ``model.layers.N.moe_block.experts.E.{linear,linear_v,linear_1}.weight``.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ml_dtypes
import numpy as np
import torch

from grokd.weights.checkpoint import Checkpoint, CheckpointError, QuantizedWeight, TokenizerSource
from grokd.weights.lazy import LazyQuantized, LazyTensor, ReadLog
from grokd.weights.pickle_layout import ArrayLayout, MemmapArray, read_layout

try:  # numpy >= 2 moved the array internals to numpy._core
    _multiarray = importlib.import_module("numpy._core.multiarray")
except ImportError:  # pragma: no cover - numpy 1.x
    _multiarray = importlib.import_module("numpy.core.multiarray")
_np_reconstruct: Callable[..., np.ndarray] = _multiarray._reconstruct

# Grok-1 as released (run.py / model.py), in the HF port's key names.
GROK1_RELEASE_CONFIG: dict[str, Any] = {
    "architectures": ["Grok1ModelForCausalLM"],
    "model_type": "grok-1",
    "vocab_size": 131072,
    "hidden_size": 6144,
    "intermediate_size": 32768,
    "num_hidden_layers": 64,
    "num_attention_heads": 48,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "attn_output_multiplier": 0.08838834764831845,
    "embedding_multiplier_scale": 78.38367176906169,
    "output_multiplier_scale": 0.5773502691896257,
    "max_attn_value": 30.0,
    "max_position_embeddings": 8192,
    "rms_norm_eps": 1e-05,
    "num_experts": 8,
    "num_experts_per_tok": 2,
    "rope_theta": 10000.0,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
}

_ALLOWED_DTYPES = {"f2", "f4", "f8", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "b1"}


class _QuantizedWeight8bit:
    """Inert stand-in for the release's ``__main__.QuantizedWeight8bit``: only holds attributes."""

    weight: Any = None
    scales: Any = None

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple):  # (dict, slots) form
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict) or set(state) - {"weight", "scales"}:
            raise pickle.UnpicklingError("QuantizedWeight8bit state must be {weight, scales}")
        self.weight, self.scales = state.get("weight"), state.get("scales")


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` inside a pickle: accepted by ``_reconstruct``, not callable."""


def _safe_reconstruct(subtype: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    if subtype is not _NdarrayToken or dtype_code not in (b"b", "b"):
        raise pickle.UnpicklingError(f"refusing array reconstruction {subtype!r}, {dtype_code!r}")
    return _np_reconstruct(np.ndarray, tuple(shape), dtype_code)


def _safe_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    if spec is ml_dtypes.bfloat16 or (isinstance(spec, str) and spec in _ALLOWED_DTYPES):
        return np.dtype(spec, align, copy)
    raise pickle.UnpicklingError(f"refusing dtype {spec!r}")


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _safe_reconstruct,
    ("numpy", "ndarray"): _NdarrayToken,
    ("numpy", "dtype"): _safe_dtype,
    ("ml_dtypes", "bfloat16"): ml_dtypes.bfloat16,
    ("__main__", "QuantizedWeight8bit"): _QuantizedWeight8bit,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals a release tensor file needs; everything else is an error."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"{self._source}: refusing to unpickle global {module}.{name} "
                "(only numpy arrays and QuantizedWeight8bit are allowed)"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"{self._source}: persistent ids are not allowed in a release tensor file")


def restricted_load(path: Path) -> Any:
    """Unpickle one release tensor file with :class:`RestrictedUnpickler`."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, str(path)).load()


@dataclass(frozen=True)
class ReleaseEntry:
    """One release tensor file: its index, Haiku path, expected shape and quantisation."""

    index: int
    haiku_path: str
    shape: tuple[int, ...]
    quantized: bool

    @property
    def filename(self) -> str:
        return f"tensor{self.index:05d}_000"


def _layer_leaves(cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...], bool]]:
    d, f, e = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_experts"]
    hd = cfg.get("head_dim") or d // cfg["num_attention_heads"]
    q, kv = cfg["num_attention_heads"] * hd, cfg["num_key_value_heads"] * hd
    return [
        ("moe/linear/w", (e, d, f), True),
        ("moe/linear_1/w", (e, f, d), True),
        ("moe/linear_v/w", (e, d, f), True),
        ("multi_head_attention/key/w", (d, kv), True),
        ("multi_head_attention/linear/w", (q, d), True),
        ("multi_head_attention/query/w", (d, q), True),
        ("multi_head_attention/value/w", (d, kv), True),
        ("rms_norm/scale", (d,), False),
        ("rms_norm_1/scale", (d,), False),
        ("rms_norm_2/scale", (d,), False),
        ("rms_norm_3/scale", (d,), False),
        ("router/w", (d, e), False),
    ]


def release_entries(cfg: dict[str, Any]) -> list[ReleaseEntry]:
    """The release's tensor files in order: leaves of the parameter tree by sorted Haiku path."""
    leaves: list[tuple[str, tuple[int, ...], bool]] = [
        ("language_model/in_out_embed/embeddings", (cfg["vocab_size"], cfg["hidden_size"]), False),
        ("language_model/rms_norm/scale", (cfg["hidden_size"],), False),
    ]
    for layer in range(cfg["num_hidden_layers"]):
        leaves += [(f"transformer/decoder_layer_{layer}/{p}", s, qz) for p, s, qz in _layer_leaves(cfg)]
    leaves.sort(key=lambda leaf: leaf[0])
    return [ReleaseEntry(i, p, s, qz) for i, (p, s, qz) in enumerate(leaves)]


_LAYER_NAMES = {
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


def hf_name(haiku_path: str, expert: int | None = None) -> str:
    """hpcai-tech HF name of a Haiku parameter path (``expert`` fills ``E`` for MoE weights)."""
    if haiku_path == "language_model/in_out_embed/embeddings":
        return "model.embed_tokens.weight"
    if haiku_path == "language_model/rms_norm/scale":
        return "model.norm.scale"
    _, layer_part, rest = haiku_path.split("/", 2)
    layer = int(layer_part.rsplit("_", 1)[1])
    return f"model.layers.{layer}." + _LAYER_NAMES[rest].format(e=expert)


def _to_torch(a: np.ndarray) -> torch.Tensor:
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a))


class ReleaseReader:
    """Random access to the tensor files of a release directory, one file at a time."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.ckpt_dir = root / "ckpt-0"
        self.config = config
        self.entries = release_entries(config)
        self._check_files()

    def _check_files(self) -> None:
        if not self.ckpt_dir.is_dir():
            raise CheckpointError(f"{self.ckpt_dir}: not a directory (expected the release's ckpt-0/)")
        names = {p.name for p in self.ckpt_dir.iterdir() if p.name.startswith("tensor")}
        for entry in self.entries:
            if entry.filename not in names:
                raise CheckpointError(
                    f"{self.ckpt_dir / entry.filename}: missing tensor file for {entry.haiku_path}"
                )
        extra = sorted(names - {e.filename for e in self.entries})
        if extra:
            raise CheckpointError(
                f"{self.ckpt_dir / extra[0]}: unexpected tensor file; the config expects "
                f"{len(self.entries)} tensors (multi-host or mismatched config?)"
            )

    def read_raw(self, entry: ReleaseEntry) -> torch.Tensor | QuantizedWeight:
        """Load one file, verify its type, dtype and shape; release layout, no renaming."""
        path = self.ckpt_dir / entry.filename
        where = f"{path} ({entry.haiku_path})"
        try:
            obj = restricted_load(path)
        except CheckpointError:
            raise
        except Exception as exc:  # truncated / corrupt pickle, bad array bytes
            raise CheckpointError(f"{where}: truncated or corrupt tensor file: {exc!r}") from exc
        if isinstance(obj, np.ndarray) and obj.dtype.hasobject:
            raise CheckpointError(f"{where}: object arrays are not allowed")
        if isinstance(obj, _QuantizedWeight8bit):
            if not entry.quantized:
                raise CheckpointError(f"{where}: expected a float array, found QuantizedWeight8bit")
            w, s = obj.weight, obj.scales
            if not isinstance(w, np.ndarray) or w.dtype != np.int8:
                raise CheckpointError(f"{where}: quantized weight must be an int8 array")
            if not isinstance(s, np.ndarray) or s.dtype not in (ml_dtypes.bfloat16, np.float32):
                raise CheckpointError(f"{where}: scales must be a bfloat16 array, found {getattr(s, 'dtype', s)!r}")
            if tuple(w.shape) != entry.shape:
                raise CheckpointError(f"{where}: shape mismatch: file has {tuple(w.shape)}, config expects {entry.shape}")
            groups = s.shape[-2] if s.ndim == w.ndim else 0
            if (s.ndim != w.ndim or s.shape[:-2] != w.shape[:-2] or s.shape[-1] != w.shape[-1]
                    or groups == 0 or w.shape[-2] % groups):
                raise CheckpointError(f"{where}: scales shape {tuple(s.shape)} does not fit weight {tuple(w.shape)}")
            return QuantizedWeight(_to_torch(w), _to_torch(s).to(torch.bfloat16))
        if isinstance(obj, np.ndarray):
            if tuple(obj.shape) != entry.shape:
                raise CheckpointError(
                    f"{where}: shape mismatch: file has {tuple(obj.shape)}, config expects {entry.shape}"
                )
            if obj.dtype.kind != "f" and obj.dtype != ml_dtypes.bfloat16:
                raise CheckpointError(f"{where}: expected a float array, found dtype {obj.dtype}")
            return _to_torch(obj)
        raise CheckpointError(f"{where}: unexpected object {type(obj).__name__} in tensor file")

    def read(self, entry: ReleaseEntry) -> list[tuple[str, torch.Tensor | QuantizedWeight]]:
        """One file as HF-named tensors (experts split per expert)."""
        raw = self.read_raw(entry)
        rest = entry.haiku_path.split("/", 2)[-1]
        if rest.startswith("moe/linear"):
            out: list[tuple[str, torch.Tensor | QuantizedWeight]] = []
            for e in range(entry.shape[0]):
                if isinstance(raw, QuantizedWeight):
                    item: torch.Tensor | QuantizedWeight = QuantizedWeight(raw.weight[e], raw.scales[e])
                else:
                    item = raw[e].t().contiguous()
                out.append((hf_name(entry.haiku_path, e), item))
            return out
        if isinstance(raw, torch.Tensor) and raw.ndim == 2 and "in_out_embed" not in entry.haiku_path:
            raw = raw.t().contiguous()  # [in, out] -> torch [out, in] (router, unquantised linears)
        return [(hf_name(entry.haiku_path), raw)]

    def tensors(self) -> Iterator[tuple[str, torch.Tensor | QuantizedWeight]]:
        for entry in self.entries:
            yield from self.read(entry)

    def read_lazy(self, entry: ReleaseEntry, log: ReadLog | None = None
                  ) -> list[tuple[str, LazyTensor | LazyQuantized]]:
        """As ``read``, but views whose slices are memory-mapped from the file on demand
        (``pickle_layout``): only the pickle's opcodes are read here, with the same checks of
        type, dtype and shape as ``read_raw``."""
        path = self.ckpt_dir / entry.filename
        where = f"{path} ({entry.haiku_path})"
        layout = read_layout(path, where, log)
        rest = entry.haiku_path.split("/", 2)[-1]
        if isinstance(layout, dict):
            if not entry.quantized:
                raise CheckpointError(f"{where}: expected a float array, found QuantizedWeight8bit")
            w, s = layout["weight"], layout["scales"]
            self._check_quantized(where, entry, w, s)
            if rest.startswith("moe/linear"):
                return [(hf_name(entry.haiku_path, e),
                         LazyQuantized(LazyTensor(MemmapArray(w, log), (e,)), LazyTensor(MemmapArray(s, log), (e,))))
                        for e in range(entry.shape[0])]
            return [(hf_name(entry.haiku_path),
                     LazyQuantized(LazyTensor(MemmapArray(w, log)), LazyTensor(MemmapArray(s, log))))]
        if layout.shape != entry.shape:
            raise CheckpointError(f"{where}: shape mismatch: file has {layout.shape}, config expects {entry.shape}")
        if layout.dtype.kind != "f" and layout.dtype != ml_dtypes.bfloat16:
            raise CheckpointError(f"{where}: expected a float array, found dtype {layout.dtype}")
        src = MemmapArray(layout, log)
        if rest.startswith("moe/linear"):
            return [(hf_name(entry.haiku_path, e), LazyTensor(src, (e,), transposed=True))
                    for e in range(entry.shape[0])]
        transposed = len(layout.shape) == 2 and "in_out_embed" not in entry.haiku_path
        return [(hf_name(entry.haiku_path), LazyTensor(src, transposed=transposed))]

    @staticmethod
    def _check_quantized(where: str, entry: ReleaseEntry, w: ArrayLayout, s: ArrayLayout) -> None:
        if w.dtype != np.int8:
            raise CheckpointError(f"{where}: quantized weight must be an int8 array")
        if s.dtype not in (ml_dtypes.bfloat16, np.float32):
            raise CheckpointError(f"{where}: scales must be a bfloat16 array, found {s.dtype!r}")
        if w.shape != entry.shape:
            raise CheckpointError(f"{where}: shape mismatch: file has {w.shape}, config expects {entry.shape}")
        groups = s.shape[-2] if len(s.shape) == len(w.shape) else 0
        if (len(s.shape) != len(w.shape) or s.shape[:-2] != w.shape[:-2] or s.shape[-1] != w.shape[-1]
                or groups == 0 or w.shape[-2] % groups):
            raise CheckpointError(f"{where}: scales shape {s.shape} does not fit weight {w.shape}")

    def lazy_tensors(self, log: ReadLog | None = None) -> Iterator[tuple[str, LazyTensor | LazyQuantized]]:
        for entry in self.entries:
            yield from self.read_lazy(entry, log)


def find_release_root(path: Path) -> Path | None:
    """The directory holding ``ckpt-0/`` for ``path`` (the root itself or its ``ckpt-0``)."""
    if (path / "ckpt-0").is_dir():
        return path
    if path.name == "ckpt-0" and path.is_dir():
        return path.parent
    return None


def release_config(root: Path) -> dict[str, Any]:
    """``config.json`` next to ``ckpt-0/`` if present, else the built-in Grok-1 release config."""
    cfg_path = root / "config.json"
    if cfg_path.is_file():
        return {**GROK1_RELEASE_CONFIG, **json.loads(cfg_path.read_text())}
    return dict(GROK1_RELEASE_CONFIG)


def _tokenizer_near(root: Path) -> TokenizerSource | None:
    for d in (root, root.parent):
        if (d / "tokenizer.model").is_file():
            return TokenizerSource(kind="sentencepiece", path=d / "tokenizer.model")
    return None


def _fingerprint(root: Path, config: dict[str, Any], reader: ReleaseReader) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for entry in reader.entries:
        p = reader.ckpt_dir / entry.filename
        h.update(f"{entry.filename}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


def read_release(path: str | Path, read_log: ReadLog | None = None) -> Checkpoint:
    """Open a release directory (containing ``ckpt-0/``) as a :class:`Checkpoint`; ``read_log``
    counts what ``lazy_tensors()`` reads."""
    root = find_release_root(Path(path))
    if root is None:
        raise CheckpointError(f"{path}: no ckpt-0/ directory: not a Grok-1 release layout")
    config = release_config(root)
    reader = ReleaseReader(root, config)
    return Checkpoint(
        path=root,
        format="release",
        architecture="grok-1",
        config=config,
        tensors=reader.tensors,
        tokenizer=_tokenizer_near(root),
        fingerprint=_fingerprint(root, config, reader),
        lazy_tensors=lambda: reader.lazy_tensors(read_log),
    )
