"""Reader for Hugging Face style directories: ``config.json`` + one or many ``*.safetensors``.

Tensors stream file by file, one at a time. grokd's own int8 conversion of the Grok-1 release
stores each quantised weight ``X`` as ``X.qweight`` (int8, release ``[in, out]`` layout) plus
``X.scales`` (bf16 ``[G, out]``) in the same shard; they are streamed as one ``QuantizedWeight``
named ``X``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from grokd.weights.checkpoint import Checkpoint, CheckpointError, QuantizedWeight, TokenizerSource
from grokd.weights.lazy import LazyQuantized, LazyTensor, ReadLog

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
MANIFEST_NAME = "grokd-manifest.json"
QWEIGHT_SUFFIX = ".qweight"
SCALES_SUFFIX = ".scales"


def architecture_of(config: dict[str, Any]) -> str:
    """Model family from ``model_type`` / ``architectures`` (``grok-1``, ``grok-2``, ``llama``, ...)."""
    archs = [str(a) for a in config.get("architectures") or []]
    model_type = str(config.get("model_type", "")).lower()
    if config.get("residual_moe") and (model_type in ("git", "grok-2", "grok2", "grok")
                                       or any(a.startswith("Grok") for a in archs)):
        return "grok-2"  # the Grok-2 release says Grok1ForCausalLM; its residual MoE tells them apart
    if model_type in ("grok-1", "grok1", "grok") or any(a.startswith("Grok1") for a in archs):
        return "grok-1"
    if model_type == "llama" or any(a.startswith("Llama") for a in archs):
        return "llama"
    if model_type:
        return model_type
    raise CheckpointError("config.json has neither a known model_type nor architectures")


def shard_files(root: Path) -> list[Path]:
    """The safetensors files of ``root``, via the index if there is one."""
    index = root / INDEX_NAME
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (root / f).is_file()]
        if missing:
            raise CheckpointError(f"{root / missing[0]}: listed in {INDEX_NAME} but missing")
        return [root / f for f in files]
    if (root / SINGLE_NAME).is_file():
        return [root / SINGLE_NAME]
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"{root}: no *.safetensors files")
    return files


def iter_safetensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor | QuantizedWeight]]:
    """Stream tensors of ``files``, pairing ``.qweight``/``.scales`` into ``QuantizedWeight``."""
    for path in files:
        try:
            handle = safe_open(str(path), framework="pt")
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot open safetensors file: {exc}") from exc
        with handle as f:
            keys = list(f.keys())
            key_set = set(keys)
            for key in keys:
                if key.endswith(SCALES_SUFFIX) and key[: -len(SCALES_SUFFIX)] + QWEIGHT_SUFFIX in key_set:
                    continue
                try:
                    if key.endswith(QWEIGHT_SUFFIX):
                        base = key[: -len(QWEIGHT_SUFFIX)]
                        if base + SCALES_SUFFIX not in key_set:
                            raise CheckpointError(f"{path}: {key} has no {base + SCALES_SUFFIX} in the same file")
                        yield base, QuantizedWeight(f.get_tensor(key), f.get_tensor(base + SCALES_SUFFIX))
                    else:
                        yield key, f.get_tensor(key)
                except CheckpointError:
                    raise
                except Exception as exc:
                    raise CheckpointError(f"{path}: cannot read tensor {key}: {exc}") from exc


class SafetensorsArray:
    """An ``ArraySource`` over one tensor of a safetensors file: each read opens the file and
    takes the slice with ``get_slice``, which copies only the sliced elements out of the mapping."""

    def __init__(self, path: Path, key: str, shape: tuple[int, ...], log: ReadLog | None = None) -> None:
        self.path, self.key, self._shape, self.log = path, key, shape, log

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def read(self, index: tuple[slice | int, ...]) -> torch.Tensor:
        try:
            with safe_open(str(self.path), framework="pt") as f:
                out = f.get_slice(self.key)[index] if index else f.get_tensor(self.key)
        except Exception as exc:
            raise CheckpointError(f"{self.path}: cannot read tensor {self.key}: {exc}") from exc
        if self.log is not None:
            self.log.add(out.numel() * out.element_size())
        return out


def iter_safetensors_lazy(files: list[Path], log: ReadLog | None = None
                          ) -> Iterator[tuple[str, LazyTensor | LazyQuantized]]:
    """As ``iter_safetensors``, as lazy views: only the headers are read here."""
    for path in files:
        try:
            with safe_open(str(path), framework="pt") as f:
                keys = list(f.keys())
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in keys}
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot open safetensors file: {exc}") from exc
        key_set = set(keys)
        for key in keys:
            if key.endswith(SCALES_SUFFIX) and key[: -len(SCALES_SUFFIX)] + QWEIGHT_SUFFIX in key_set:
                continue
            if key.endswith(QWEIGHT_SUFFIX):
                base = key[: -len(QWEIGHT_SUFFIX)]
                if base + SCALES_SUFFIX not in key_set:
                    raise CheckpointError(f"{path}: {key} has no {base + SCALES_SUFFIX} in the same file")
                scales = base + SCALES_SUFFIX
                yield base, LazyQuantized(LazyTensor(SafetensorsArray(path, key, shapes[key], log)),
                                          LazyTensor(SafetensorsArray(path, scales, shapes[scales], log)))
            else:
                yield key, LazyTensor(SafetensorsArray(path, key, shapes[key], log))


def tokenizer_in(root: Path) -> TokenizerSource | None:
    if (root / "tokenizer.model").is_file():
        return TokenizerSource(kind="sentencepiece", path=root / "tokenizer.model")
    if (root / "tokenizer.json").is_file():
        return TokenizerSource(kind="hf", path=root / "tokenizer.json")
    if (root / "tokenizer.tok.json").is_file():
        return TokenizerSource(kind="tiktoken", path=root / "tokenizer.tok.json")
    return None


def chat_template_in(root: Path) -> str | None:
    """``chat_template`` from tokenizer_config.json (a string, or the ``default`` of a named list)."""
    path = root / "tokenizer_config.json"
    if not path.is_file():
        return None
    template = json.loads(path.read_text()).get("chat_template")
    if isinstance(template, list):
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default") or next(iter(named.values()), None)
    return template if isinstance(template, str) else None


def fingerprint_of(root: Path, config: dict[str, Any], files: list[Path]) -> str:
    """sha256 of the manifest when there is one, else of config + file names and sizes."""
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        return hashlib.sha256(manifest.read_bytes()).hexdigest()
    h = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
    for p in files:
        h.update(f"{p.name}:{p.stat().st_size}\n".encode())
    return h.hexdigest()


def read_safetensors(path: str | Path, read_log: ReadLog | None = None) -> Checkpoint:
    """Open an HF-style directory (or one ``.safetensors`` file inside it) as a :class:`Checkpoint`;
    ``read_log`` counts what ``lazy_tensors()`` reads."""
    p = Path(path)
    root = p.parent if p.is_file() else p
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (needed to know the architecture)")
    config = json.loads(cfg_path.read_text())
    files = [p] if p.is_file() else shard_files(root)
    return Checkpoint(
        path=root,
        format="safetensors",
        architecture=architecture_of(config),
        config=config,
        tensors=lambda: iter_safetensors(files),
        tokenizer=tokenizer_in(root),
        chat_template=chat_template_in(root),
        fingerprint=fingerprint_of(root, config, files),
        lazy_tensors=lambda: iter_safetensors_lazy(files, read_log),
    )
