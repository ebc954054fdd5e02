"""``grokd convert SRC DST``: Grok-1 release pickles -> safetensors shards + index + manifest.

One shard per decoder layer plus one for the embeddings and final norm. Each shard is written
while streaming its source files one at a time (the safetensors header space is reserved up
front and filled in at the end), so peak memory stays near the largest single tensor. A shard is
written under a temporary name, renamed when complete, then recorded with its SHA-256 in
``grokd-manifest.json``; re-running skips shards the manifest already lists.

int8 output keeps the release's quantised weights: ``X.qweight`` (int8, ``[in, out]``) and
``X.scales`` (bf16, ``[G, out]``); ``--weights-dtype bfloat16`` writes the hpcai port layout
(``[out, in]`` bf16 equal to ``bf16(int8 * scale)``). Plain f32 tensors are copied unchanged.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from grokd.kernels.quant import GroupedInt8Weight
from grokd.weights.checkpoint import CheckpointError, QuantizedWeight
from grokd.weights.release import ReleaseEntry, ReleaseReader, find_release_root, hf_name, release_config
from grokd.weights.safetensors_reader import INDEX_NAME, MANIFEST_NAME, QWEIGHT_SUFFIX, SCALES_SUFFIX

_ST_DTYPES = {torch.int8: "I8", torch.bfloat16: "BF16", torch.float32: "F32", torch.float16: "F16",
              torch.uint8: "U8", torch.int32: "I32", torch.int64: "I64", torch.float64: "F64"}
_MANIFEST_FORMAT = "grokd-safetensors-v1"


@dataclass
class ConvertResult:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    total_bytes: int = 0


class StreamingSafetensorsWriter:
    """Writes a safetensors file tensor by tensor: data first, then the header into reserved space.

    The header may be padded with spaces (allowed by the format), so ``reserve`` only has to be an
    upper bound of the final header length.
    """

    def __init__(self, path: Path, reserve: int) -> None:
        self.path = path
        self.reserve = (reserve + 7) // 8 * 8
        self._f = open(path, "wb")  # noqa: SIM115 - closed in finish()
        self._f.seek(8 + self.reserve)
        self._offset = 0
        self._header: dict[str, Any] = {}

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self._header:
            raise CheckpointError(f"{self.path}: duplicate tensor {name}")
        t = tensor.detach().contiguous().cpu()
        data = t.reshape(-1).view(torch.uint8).numpy().data if t.numel() else memoryview(b"")
        self._f.write(data)
        n = t.numel() * t.element_size()
        self._header[name] = {"dtype": _ST_DTYPES[t.dtype], "shape": list(t.shape),
                              "data_offsets": [self._offset, self._offset + n]}
        self._offset += n

    def finish(self, metadata: dict[str, str] | None = None) -> None:
        header = dict(self._header)
        if metadata:
            header["__metadata__"] = metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > self.reserve:
            self._f.close()
            raise CheckpointError(f"{self.path}: header ({len(raw)} bytes) exceeds reserved {self.reserve}")
        self._f.seek(0)
        self._f.write(struct.pack("<Q", self.reserve))
        self._f.write(raw + b" " * (self.reserve - len(raw)))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


def _planned(entry: ReleaseEntry, weights_dtype: str) -> list[tuple[str, list[int]]]:
    """Names and (upper-bound) shapes an entry will produce, for reserving header space."""
    per_expert = entry.haiku_path.split("/", 2)[-1].startswith("moe/linear")
    shape = list(entry.shape[1:] if per_expert else entry.shape)
    names = [hf_name(entry.haiku_path, e) for e in range(entry.shape[0])] if per_expert else [hf_name(entry.haiku_path)]
    out: list[tuple[str, list[int]]] = []
    for n in names:
        if entry.quantized and weights_dtype == "int8":
            out += [(n + QWEIGHT_SUFFIX, shape), (n + SCALES_SUFFIX, shape)]  # scales rows <= K
        else:
            out.append((n, shape))
    return out


def _reserve(items: list[tuple[str, list[int]]]) -> int:
    big = 10**19
    bound = {n: {"dtype": "BF16", "shape": s, "data_offsets": [big, big]} for n, s in items}
    bound["__metadata__"] = {"format": "pt"}
    return len(json.dumps(bound, separators=(",", ":"))) + 64


def _converted(name: str, value: torch.Tensor | QuantizedWeight, weights_dtype: str) -> list[tuple[str, torch.Tensor]]:
    if isinstance(value, QuantizedWeight):
        if weights_dtype == "int8":
            return [(name + QWEIGHT_SUFFIX, value.weight), (name + SCALES_SUFFIX, value.scales)]
        return [(name, GroupedInt8Weight(value.weight, value.scales).dequantize().t().contiguous())]
    return [(name, value)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _shard_plan(entries: list[ReleaseEntry]) -> list[list[ReleaseEntry]]:
    """Embeddings + final norm first, then one shard per decoder layer (in layer order)."""
    by_layer: dict[int, list[ReleaseEntry]] = {}
    top: list[ReleaseEntry] = []
    for e in entries:
        if e.haiku_path.startswith("transformer/decoder_layer_"):
            layer = int(e.haiku_path.split("/")[1].rsplit("_", 1)[1])
            by_layer.setdefault(layer, []).append(e)
        else:
            top.append(e)
    return [top] + [by_layer[k] for k in sorted(by_layer)]


def convert(src: str | Path, dst: str | Path, weights_dtype: str = "int8", progress: bool = True) -> ConvertResult:
    """Convert the release at ``src`` into a safetensors directory ``dst`` (resumable)."""
    if weights_dtype not in ("int8", "bfloat16"):
        raise ValueError(f"weights_dtype must be int8 or bfloat16, not {weights_dtype!r}")
    root = find_release_root(Path(src))
    if root is None:
        raise CheckpointError(f"{src}: no ckpt-0/ directory: not a Grok-1 release layout")
    config = release_config(root)
    reader = ReleaseReader(root, config)
    out = Path(dst)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST_NAME
    manifest: dict[str, Any] = {"format": _MANIFEST_FORMAT, "weights_dtype": weights_dtype, "shards": {}}
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("weights_dtype") != weights_dtype:
            raise CheckpointError(f"{manifest_path}: existing conversion is {old.get('weights_dtype')}, "
                                  f"not {weights_dtype}; use an empty destination")
        manifest = old
    plan = _shard_plan(reader.entries)
    result = ConvertResult()
    weight_map: dict[str, str] = {}
    bar = tqdm(total=len(reader.entries), unit="tensor", desc="convert", disable=not progress)
    for k, shard in enumerate(plan):
        fname = f"model-{k + 1:05d}-of-{len(plan):05d}.safetensors"
        items = [it for e in shard for it in _planned(e, weights_dtype)]
        weight_map.update({n: fname for n, _ in items})
        done = manifest["shards"].get(fname)
        if done and (out / fname).is_file() and (out / fname).stat().st_size == done["bytes"]:
            result.skipped.append(fname)
            result.total_bytes += done["bytes"]
            bar.update(len(shard))
            continue
        partial = out / (fname + ".partial")
        writer = StreamingSafetensorsWriter(partial, _reserve(items))
        for entry in shard:
            for name, value in reader.read(entry):
                for n, t in _converted(name, value, weights_dtype):
                    writer.add(n, t)
            bar.update(1)
        writer.finish({"format": "pt"})
        os.replace(partial, out / fname)
        size = (out / fname).stat().st_size
        manifest["shards"][fname] = {"sha256": _sha256(out / fname), "bytes": size, "tensors": len(items)}
        _write_json(manifest_path, manifest)
        result.written.append(fname)
        result.total_bytes += size
    bar.close()
    _write_json(out / INDEX_NAME, {"metadata": {"total_size": result.total_bytes}, "weight_map": weight_map})
    out_config = dict(config)
    out_config["torch_dtype"] = "bfloat16"
    if weights_dtype == "int8":
        out_config["grokd_quantization"] = {"method": "int8-release", "layout": "in_out",
                                            "suffixes": [QWEIGHT_SUFFIX, SCALES_SUFFIX]}
    _write_json(out / "config.json", out_config)
    for d in (root, root.parent):
        if (d / "tokenizer.model").is_file():
            shutil.copyfile(d / "tokenizer.model", out / "tokenizer.model")
            break
    return result


def _run(args: argparse.Namespace) -> int:
    res = convert(args.src, args.dst, args.weights_dtype, progress=not args.no_progress)
    print(f"wrote {len(res.written)} shard(s), skipped {len(res.skipped)} already complete; "
          f"{res.total_bytes / 2**30:.2f} GiB in {args.dst}")
    return 0


def add_cli(subparsers: Any) -> None:
    p = subparsers.add_parser("convert", help="convert the Grok-1 release (ckpt-0) to safetensors shards",
                              description=__doc__.splitlines()[0])
    p.add_argument("src", help="release directory containing ckpt-0/")
    p.add_argument("dst", help="output directory (re-running resumes)")
    p.add_argument("--weights-dtype", choices=("int8", "bfloat16"), default="int8",
                   help="int8 keeps the release's int8 + scales (default); bfloat16 dequantises")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
