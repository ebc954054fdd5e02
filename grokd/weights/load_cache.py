"""On-disk cache of parsed + dequantised GGUF checkpoints, so a second load skips the slow parts.

Opening a GGUF costs seconds that do not change between runs: parsing ~50k token strings and
merges, dequantising every tensor to float32 and hashing the file for ``system_fingerprint``.
After the first load the result is stored as one safetensors file (float32 tensors, memory-mapped
on the next load) whose ``__metadata__`` holds everything else as JSON: the architecture, config,
tokenizer fields, chat template and the file's sha256.

* Location: ``$GROKD_CACHE_DIR``, else ``$XDG_CACHE_HOME/grokd``, else ``~/.cache/grokd``;
  the cache is opt-in with ``GROKD_LOAD_CACHE=1``: it stores float32 tensors (~5x a Q4 GGUF)
  and only pays off for files whose dequantisation is slow (K-quants). One entry per source path (the file name is a hash
  of the resolved path), so a changed model replaces its entry instead of accumulating new ones.
* Key: (resolved path, size, mtime_ns) of the source. Any change makes the entry stale; it is
  rebuilt on that load. Hashing the whole file to build the key would cost what the cache saves,
  so the sha256 is computed once (cold load) and stored in the entry.
* Writes go to a temporary file in the same directory and are renamed into place, so readers
  never see a half-written entry. An entry that cannot be read (truncated, corrupt, another
  version) is ignored with a warning and rewritten.
* Entries larger than ``GROKD_CACHE_MAX_BYTES`` (default 4 GiB of float32 weights) are not
  written: for large models the dequantised copy would cost more disk and I/O than it saves.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

VERSION = 1
_MAGIC = "grokd-load-cache"
DEFAULT_MAX_BYTES = 4 << 30


def cache_dir() -> Path | None:
    """The cache directory, or ``None`` when caching is turned off."""
    if os.environ.get("GROKD_LOAD_CACHE", "0").strip().lower() not in ("1", "true", "yes", "on"):
        return None
    explicit = os.environ.get("GROKD_CACHE_DIR")
    if explicit is not None:
        return Path(explicit).expanduser() if explicit.strip() else None
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "grokd"


def max_bytes() -> int:
    try:
        return int(os.environ.get("GROKD_CACHE_MAX_BYTES", DEFAULT_MAX_BYTES))
    except ValueError:
        return DEFAULT_MAX_BYTES


@dataclass(frozen=True)
class CacheKey:
    path: str
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> CacheKey:
        st = path.stat()
        return cls(str(path.resolve()), st.st_size, st.st_mtime_ns)

    def as_json(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}


def entry_path(directory: Path, key: CacheKey) -> Path:
    digest = hashlib.sha256(key.path.encode("utf-8")).hexdigest()[:24]
    return directory / f"gguf-{digest}.safetensors"


@dataclass
class CacheEntry:
    """A readable cache entry: ``meta`` as stored, tensors streamed from the memory-mapped file."""

    path: Path
    meta: dict[str, Any]
    names: list[str]

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        from safetensors import safe_open

        with safe_open(str(self.path), framework="pt") as f:
            for name in self.names:
                yield name, f.get_tensor(name)


def lookup(directory: Path, key: CacheKey) -> CacheEntry | None:
    """The entry for ``key``, or ``None`` (missing, stale, or unreadable: warned about)."""
    path = entry_path(directory, key)
    if not path.is_file():
        return None
    try:
        header, header_len = _read_header(path)
        info = header.pop("__metadata__", None) or {}
        if info.get("magic") != _MAGIC or int(info.get("version", -1)) != VERSION:
            raise ValueError("not a grokd load-cache entry of this version")
        if json.loads(info["key"]) != key.as_json():
            log.info("load cache: %s is stale (source changed); rebuilding", path)
            return None
        meta = json.loads(info["meta"])
        names = json.loads(info["names"])
        if set(names) != set(header):
            raise ValueError("tensor list does not match the stored names")
        data_len = max((int(v["data_offsets"][1]) for v in header.values()), default=0)
        if path.stat().st_size != 8 + header_len + data_len:
            raise ValueError("file is truncated")
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is just a miss
        log.warning("load cache: ignoring unreadable entry %s (%s); it will be rewritten", path, exc)
        return None
    return CacheEntry(path=path, meta=meta, names=names)


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("file is truncated")
        n = int.from_bytes(raw, "little")
        if n <= 0 or n > 256 << 20:
            raise ValueError(f"bad header length {n}")
        body = f.read(n)
        if len(body) != n:
            raise ValueError("header is truncated")
    header = json.loads(body)
    if not isinstance(header, dict):
        raise ValueError("header is not an object")
    return header, n


def store(
    directory: Path, key: CacheKey, meta: dict[str, Any], tensors: list[tuple[str, torch.Tensor]]
) -> Path | None:
    """Write an entry atomically; returns its path, or ``None`` (with a warning) if it failed."""
    from safetensors.torch import save_file

    path = entry_path(directory, key)
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        info = {
            "magic": _MAGIC,
            "version": str(VERSION),
            "key": json.dumps(key.as_json()),
            "meta": json.dumps(meta),
            "names": json.dumps([n for n, _ in tensors]),
        }
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=directory)
        os.close(fd)
        save_file({n: t.contiguous() for n, t in tensors}, tmp, metadata=info)
        os.replace(tmp, path)
        tmp = None
        return path
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written only costs speed
        log.warning("load cache: could not write %s (%s)", path, exc)
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
