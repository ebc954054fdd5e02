"""Fixtures shared across the test tree. ../shared sits beside the repository (read-only in CI)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

SHARED_DIR = Path(__file__).resolve().parents[1].parent / "shared"
GROK1_TINY = SHARED_DIR / "fixtures" / "grok1-tiny"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"{SHARED_DIR} not present")
    return SHARED_DIR


@pytest.fixture(scope="session")
def grok1_tiny_dir(shared_dir: Path) -> Path:
    """The golden tiny Grok-1: ``ckpt-0/`` (release layout), ``hf/`` and ``reference.json``."""
    return shared_dir / "fixtures" / "grok1-tiny"


@pytest.fixture(scope="session")
def grok1_tiny_reference(grok1_tiny_dir: Path) -> dict:
    return json.loads((grok1_tiny_dir / "reference.json").read_text())


@pytest.fixture(scope="session")
def grok1_tokenizer_path(shared_dir: Path) -> Path:
    return shared_dir / "grok-1" / "tokenizer.model"
