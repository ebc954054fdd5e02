"""Build scratch copies of the tiny release in tmp_path (symlinks, so tests can swap single files)."""

from __future__ import annotations

import shutil
from pathlib import Path


def release_copy(src: Path, dst: Path, with_config: bool = True) -> Path:
    (dst / "ckpt-0").mkdir(parents=True)
    for f in sorted((src / "ckpt-0").iterdir()):
        (dst / "ckpt-0" / f.name).symlink_to(f)
    if with_config:
        shutil.copyfile(src / "config.json", dst / "config.json")
    return dst


def replace_file(root: Path, index: int, data: bytes) -> Path:
    path = root / "ckpt-0" / f"tensor{index:05d}_000"
    path.unlink()
    path.write_bytes(data)
    return path
