"""Reader for xAI's Grok-2 release layout: ``pytorch_model-000NN-TP-{common,000..007}.safetensors``.

Each file number ``NN`` holds one kind of tensor (all layers' q-projections, say). A ``common``
file is replicated: every rank of xAI's 8-way layout read it whole. The expert projections are
instead cut over the ranks, one file per rank (``-TP-000`` .. ``-TP-007``): ``w1`` and ``w3``
(``[out, in]``) by their output rows, ``w2`` by its input columns, so the full tensor is the
rank files' parts concatenated in rank order on that dimension (``split_dim``).

``tensors()`` streams every tensor whole, in file order, a split one concatenated as it is read:
at most one tensor and its parts are in memory at a time. ``lazy_tensors()`` streams the same
names as ``weights.lazy`` views over a ``SplitArray``: a rank of a sharded model that asks for
rows ``a:b`` of ``w1`` reads only the rank files (and the rows in them) that cover ``a:b``, through
``safe_open(...).get_slice``. Names are the release's own (SGLang / Mixtral style:
``model.layers.N.block_sparse_moe.experts.E.w1.weight``, ``model.layers.N.mlp.gate_proj.weight``,
``lm_head.weight`` ...); the model maps them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm import tqdm

from grokd.weights.checkpoint import Checkpoint, CheckpointError
from grokd.weights.lazy import LazyTensor, ReadLog
from grokd.weights.safetensors_reader import (
    SafetensorsArray,
    architecture_of,
    chat_template_in,
    fingerprint_of,
    tokenizer_in,
)

FILE_RE = re.compile(r"^pytorch_model-(\d+)-TP-(common|\d{3})\.safetensors$")

# Grok-2 as released (xai-org/grok-2 config.json), the fields grokd reads
GROK2_RELEASE_CONFIG: dict[str, Any] = {
    "architectures": ["Grok1ForCausalLM"],
    "model_type": "git",
    "vocab_size": 131072,
    "hidden_size": 8192,
    "intermediate_size": 32768,
    "moe_intermediate_size": 16384,
    "residual_moe": True,
    "num_hidden_layers": 64,
    "num_attention_heads": 64,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "num_local_experts": 8,
    "num_experts_per_tok": 2,
    "rms_norm_eps": 1e-05,
    "embedding_multiplier_scale": 90.50966799187809,
    "output_multiplier_scale": 0.5,
    "attn_logit_softcapping": 30.0,
    "router_logit_softcapping": 30.0,
    "final_logit_softcapping": 50.0,
    "attn_temperature_len": 1024,
    "rope_theta": 208533496,
    "rope_type": "original",
    "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "bos_token_id": None,
    "eos_token_id": 2,
    "pad_token_id": 0,
    "torch_dtype": "bfloat16",
}


def is_tp_release(root: Path) -> bool:
    """Whether directory ``root`` holds the release's ``-TP-common`` files."""
    return root.is_dir() and any(FILE_RE.match(p.name) for p in root.glob("pytorch_model-*-TP-*.safetensors"))


def split_dim(name: str) -> int:
    """The dimension a rank-split tensor is cut on: ``w2`` (the down projection) by its input
    columns, everything else (``w1``, ``w3``) by its output rows."""
    return 1 if ".w2." in name else 0


@dataclass(frozen=True)
class FileGroup:
    """One file number: a single ``common`` file, or the rank files in rank order."""

    number: int
    files: tuple[Path, ...]

    @property
    def common(self) -> bool:
        return self.files[0].name.endswith("-TP-common.safetensors")


def file_groups(root: Path) -> list[FileGroup]:
    """The release's files by number, checking that each number is one common file or a complete
    run of rank files ``000 .. R-1`` (the same R for every split number)."""
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(root.glob("pytorch_model-*-TP-*.safetensors")):
        m = FILE_RE.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), {})[m.group(2)] = p
    if not found:
        raise CheckpointError(f"{root}: no pytorch_model-NNNNN-TP-*.safetensors files")
    groups: list[FileGroup] = []
    ranks: int | None = None
    for number in sorted(found):
        parts = found[number]
        if "common" in parts:
            if len(parts) > 1:
                raise CheckpointError(f"{root}: file number {number:05d} has both a TP-common file and rank files")
            groups.append(FileGroup(number, (parts["common"],)))
            continue
        want = [f"{r:03d}" for r in range(len(parts))]
        if sorted(parts) != want:
            raise CheckpointError(f"{root}: file number {number:05d} has rank files {sorted(parts)}, "
                                  f"not a complete run 000..{len(parts) - 1:03d}")
        if ranks is not None and len(parts) != ranks:
            raise CheckpointError(f"{root}: file number {number:05d} is split over {len(parts)} ranks, "
                                  f"others over {ranks}")
        ranks = len(parts)
        groups.append(FileGroup(number, tuple(parts[r] for r in want)))
    return groups


def _headers(path: Path) -> dict[str, tuple[int, ...]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot open safetensors file: {exc}") from exc


@dataclass(frozen=True)
class Entry:
    """One tensor of the release: its name, the files holding it (one, or the rank files), each
    part's shape, and the dimension the parts concatenate on (``None``: not split)."""

    name: str
    files: tuple[Path, ...]
    part_shapes: tuple[tuple[int, ...], ...]
    dim: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        if self.dim is None:
            return self.part_shapes[0]
        first = list(self.part_shapes[0])
        first[self.dim] = sum(s[self.dim] for s in self.part_shapes)
        return tuple(first)


def entries(groups: list[FileGroup]) -> list[Entry]:
    """Every tensor of ``groups`` from the file headers alone; a split tensor must be in every rank
    file with parts that agree on all but the split dimension."""
    out: list[Entry] = []
    for group in groups:
        heads = [_headers(p) for p in group.files]
        for name, shape in heads[0].items():
            if group.common:
                out.append(Entry(name, group.files, (shape,), None))
                continue
            shapes = []
            for path, head in zip(group.files, heads, strict=True):
                if name not in head:
                    raise CheckpointError(f"{path}: missing {name} (present in {group.files[0].name})")
                shapes.append(head[name])
            dim = split_dim(name)
            for path, s in zip(group.files, shapes, strict=True):
                if len(s) != len(shape) or any(a != b for i, (a, b) in enumerate(zip(s, shape, strict=True))
                                                if i != dim):
                    raise CheckpointError(f"{path}: {name} part has shape {s}, which does not concatenate "
                                          f"with {shape} on dim {dim}")
            out.append(Entry(name, group.files, tuple(shapes), dim))
        for path, head in zip(group.files[1:], heads[1:], strict=True):
            extra = sorted(set(head) - set(heads[0]))
            if extra:
                raise CheckpointError(f"{path}: {extra[0]} is not in {group.files[0].name}")
    return out


class SplitArray:
    """An ``ArraySource`` over a tensor cut across rank files: reading a slice reads, from each rank
    file whose part overlaps the slice on the split dimension, just the overlapping elements."""

    def __init__(self, entry: Entry, log: ReadLog | None = None) -> None:
        assert entry.dim is not None, "a split entry"
        self.dim = entry.dim
        self.parts = [SafetensorsArray(p, entry.name, s, log) for p, s in
                      zip(entry.files, entry.part_shapes, strict=True)]
        self._shape = entry.shape

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    def read(self, index: tuple[slice | int, ...]) -> torch.Tensor:
        ndim = len(self._shape)
        full = list(index) + [slice(None)] * (ndim - len(index))
        if any(not isinstance(s, slice) or s.step not in (None, 1) for s in full):
            raise IndexError(f"split tensors take unit-step slices, got {index!r}")
        cut = full[self.dim]
        assert isinstance(cut, slice)
        start, stop, _ = cut.indices(self._shape[self.dim])
        pieces = []
        offset = 0
        for part in self.parts:
            n = part.shape[self.dim]
            lo, hi = max(start, offset), min(stop, offset + n)
            if lo < hi:
                local = list(full)
                local[self.dim] = slice(lo - offset, hi - offset)
                pieces.append(part.read(tuple(local)))
            offset += n
        if not pieces:  # an empty slice: an empty read of the first part keeps the dtype
            local = list(full)
            local[self.dim] = slice(0, 0)
            return self.parts[0].read(tuple(local))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=self.dim)


def _read_whole(entry: Entry) -> torch.Tensor:
    parts = []
    for path in entry.files:
        try:
            with safe_open(str(path), framework="pt") as f:
                parts.append(f.get_tensor(entry.name))
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot read tensor {entry.name}: {exc}") from exc
    return parts[0] if entry.dim is None else torch.cat(parts, dim=entry.dim)


def iter_tp_release(listed: list[Entry], progress: bool | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor whole, one at a time (split ones concatenated), with a tqdm bar on a terminal."""
    for entry in tqdm(listed, desc="load", unit="tensor", disable=None if progress is None else not progress):
        yield entry.name, _read_whole(entry)


def iter_tp_release_lazy(listed: list[Entry], log: ReadLog | None = None) -> Iterator[tuple[str, LazyTensor]]:
    """The same names as lazy views: nothing is read until a view is sliced."""
    for entry in listed:
        source = (SafetensorsArray(entry.files[0], entry.name, entry.shape, log) if entry.dim is None
                  else SplitArray(entry, log))
        yield entry.name, LazyTensor(source)


def read_tp_release(path: str | Path, read_log: ReadLog | None = None) -> Checkpoint:
    """Open a directory in the release layout as a :class:`Checkpoint` (headers only);
    ``read_log`` counts what ``lazy_tensors()`` reads."""
    root = Path(path)
    cfg_path = root / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{cfg_path}: missing (needed to know the architecture)")
    try:
        config = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{cfg_path}: not valid JSON: {exc}") from None
    groups = file_groups(root)
    listed = entries(groups)
    files = [p for g in groups for p in g.files]
    return Checkpoint(
        path=root,
        format="tp-release",
        architecture=architecture_of(config),
        config=config,
        tensors=lambda: iter_tp_release(listed),
        tokenizer=tokenizer_in(root),
        chat_template=chat_template_in(root),
        fingerprint=fingerprint_of(root, config, files),
        lazy_tensors=lambda: iter_tp_release_lazy(listed, read_log),
    )
