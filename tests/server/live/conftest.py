"""Live-source tests run against a tiny real HTTP server on 127.0.0.1 (no internet on CI machines)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.server.stub_http import StubServer, serve_stub


@pytest.fixture
def stub() -> Iterator[StubServer]:
    with serve_stub() as server:
        yield server


class CharTokenizer:
    """Stand-in for the engine tokenizer: one token per 4 characters (rounded up)."""

    def encode(self, text: str) -> list[int]:
        return list(range((len(text) + 3) // 4))
