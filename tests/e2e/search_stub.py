"""A SearXNG stand-in on 127.0.0.1 answering every search with one known result: what the
Responses API's ``web_search`` tool searches in the end-to-end tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from tests.server.stub_http import StubServer, serve_stub

COMET = {"url": "https://astro.example/comet-tonight", "title": "Comet Zorvex visible tonight",
         "content": "Comet Zorvex is visible tonight after 21:00 in the western sky.", "score": 3.0}


@contextmanager
def serve_searx() -> Iterator[StubServer]:
    with serve_stub() as stub:
        stub.routes["/search"] = lambda r: (200, {"content-type": "application/json"},
                                            json.dumps({"query": r.query.get("q"), "results": [COMET]}).encode())
        yield stub
