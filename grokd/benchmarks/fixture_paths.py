"""The test data a source checkout carries, for benchmarks run from it (an installed wheel has none)."""

from __future__ import annotations

from pathlib import Path

TEST_DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
GROK1_TINY = TEST_DATA / "grok1-tiny"  # the golden tiny Grok-1, release layout
GROK1_TOKENIZER = TEST_DATA / "grok1-tokenizer.model"  # Grok-1's SentencePiece model
