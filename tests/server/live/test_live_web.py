"""Web/news through a SearXNG stand-in, and the 400 when no backend is configured."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from grokd.server.live.base import LiveSourceError, SourceNotConfiguredError, SourceQuery
from grokd.server.live.http_guard import GuardedFetcher
from grokd.server.live.service import LiveConfig, LiveContextService
from grokd.server.live.web import SearxngBackend, SearxngConfig, WebSource

RESULTS = {
    "query": "comet",
    "number_of_results": 3,
    "results": [
        {
            "url": "https://astro.example/comet",
            "title": "Comet <b>visible</b> tonight",
            "content": "Look west.",
            "engine": "duckduckgo",
            "score": 3.0,
            "publishedDate": None,
        },
        {"url": "https://spam.example/comet", "title": "Comet deals", "content": "Buy now", "score": 2.0},
        {
            "url": "https://news.astro.example/old",
            "title": "Old comet",
            "content": "2019 story",
            "score": 1.0,
            "publishedDate": "2019-01-01T00:00:00",
        },
    ],
}


@pytest.fixture
def searx(stub):
    stub.routes["/search"] = lambda r: (
        200,
        {"content-type": "application/json"},
        json.dumps(RESULTS).encode(),
    )
    return stub


def _search(stub, kind, **query):
    backend = SearxngBackend(SearxngConfig(stub.base), GuardedFetcher([stub.hostport]))
    return asyncio.run(WebSource(backend, kind).search(SourceQuery(terms=("comet",), **query)))


def test_searxng_json_api(searx) -> None:
    docs = _search(searx, "web", excluded_websites=("spam.example",))
    assert [d.url for d in docs] == ["https://astro.example/comet", "https://news.astro.example/old"]
    assert docs[0].title == "Comet visible tonight" and docs[0].source == "web"
    params = searx.requests[0].query
    assert params["q"] == "comet" and params["format"] == "json" and params["categories"] == "general"
    assert params["safesearch"] == "1"


def test_news_category_allowed_sites_and_dates(searx) -> None:
    since = datetime.now(UTC) - timedelta(days=3)
    docs = _search(searx, "news", allowed_websites=("astro.example",), from_time=since)
    assert [d.url for d in docs] == [
        "https://astro.example/comet"
    ]  # subdomain allowed, 2019 item out of range
    params = searx.requests[0].query
    assert params["categories"] == "news" and params["time_range"] == "week"


def test_backend_error_is_a_source_error(stub) -> None:
    stub.routes["/search"] = lambda r: (403, {}, b"format json disabled")
    with pytest.raises(LiveSourceError) as info:
        _search(stub, "web")
    assert info.value.source == "web" and info.value.status == 403


def test_web_without_backend_is_a_400(tmp_path) -> None:
    service = LiveContextService(LiveConfig(state_dir=tmp_path))
    with pytest.raises(SourceNotConfiguredError, match=r"sources\[1\].type: source 'web' is not configured"):
        service.validate({"sources": [{"type": "local"}, {"type": "web"}]})
    with pytest.raises(ValueError, match="news"):
        service.validate({"sources": [{"type": "news"}]})
