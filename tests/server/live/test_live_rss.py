"""RSS 2.0 and Atom feeds served over real HTTP, with conditional GET and the short cache."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from grokd.server.live.base import LiveSourceError, SourceQuery
from grokd.server.live.http_guard import GuardedFetcher
from grokd.server.live.rss import RssConfig, RssSource

DATA = Path(__file__).parent / "data"
ETAG = '"v1"'
LAST_MODIFIED = "Tue, 24 Nov 2026 18:00:00 GMT"


def _feed(name: str, content_type: str):
    body = (DATA / name).read_bytes()

    def handler(request):
        if request.headers.get("if-none-match") == ETAG:
            return 304, {"etag": ETAG}, b""
        return 200, {"content-type": content_type, "etag": ETAG, "last-modified": LAST_MODIFIED}, body

    return handler


@pytest.fixture
def feeds(stub):
    stub.routes["/news.rss"] = _feed("news.rss", "application/rss+xml")
    stub.routes["/releases.atom"] = _feed("releases.atom", "application/atom+xml")
    return stub


def _search(source: RssSource, links, **query):
    return asyncio.run(source.search(SourceQuery(links=tuple(links), **query)))


def test_rss2_items(feeds) -> None:
    docs = _search(RssSource(GuardedFetcher([feeds.hostport])), [feeds.base + "/news.rss"], terms=("ferry",))
    by_url = {d.url: d for d in docs}
    ferry = by_url["https://gazette.example/2026/11/24/ferry-resumes"]
    assert ferry.title == "Ferry service resumes after storm"
    assert ferry.text == "The ferry to the island runs again from Wednesday & timetables are unchanged."
    assert ferry.author == "M. Keller"
    assert ferry.published_at == datetime(2026, 11, 24, 17, 30, tzinfo=UTC)
    assert by_url["https://gazette.example/2026/11/20/harbour-wall"].author == "Harbour Gazette"
    assert docs[0].url.endswith("ferry-resumes")  # matches the term and is newest
    assert len(docs) == 3


def test_atom_entries(feeds) -> None:
    docs = _search(RssSource(GuardedFetcher([feeds.hostport])), [feeds.base + "/releases.atom"])
    assert [d.url for d in docs] == [
        "https://widgets.example/releases/4.2",
        "https://widgets.example/releases/4.1.1",
    ]
    assert docs[0].author == "Jo Rivera" and "plugin API" in docs[0].text and "<p>" not in docs[0].text
    assert docs[1].published_at == datetime(2026, 11, 2, 12, tzinfo=UTC)  # from <updated>


def test_date_filter(feeds) -> None:
    source = RssSource(GuardedFetcher([feeds.hostport]))
    docs = _search(
        source,
        [feeds.base + "/news.rss", feeds.base + "/releases.atom"],
        from_time=datetime(2026, 11, 15, tzinfo=UTC),
        to_time=datetime(2026, 11, 24, 23, 59, tzinfo=UTC),
    )
    assert sorted(d.url for d in docs) == [
        "https://gazette.example/2026/11/20/harbour-wall",
        "https://gazette.example/2026/11/24/ferry-resumes",
    ]


def test_ttl_cache_then_conditional_get(feeds) -> None:
    source = RssSource(GuardedFetcher([feeds.hostport]), RssConfig(ttl_s=60))
    link = feeds.base + "/news.rss"
    first = _search(source, [link])
    second = _search(source, [link])
    assert len(feeds.requests) == 1 and [d.url for d in first] == [d.url for d in second]

    expired = RssSource(GuardedFetcher([feeds.hostport]), RssConfig(ttl_s=0))
    _search(expired, [link])
    again = _search(expired, [link])
    assert len(again) == 3
    revalidation = feeds.requests[-1]
    assert revalidation.headers.get("if-none-match") == ETAG
    assert revalidation.headers.get("if-modified-since") == LAST_MODIFIED


def test_one_bad_link_does_not_sink_the_others(feeds) -> None:
    feeds.routes["/gone.rss"] = lambda r: (404, {}, b"")
    docs = _search(
        RssSource(GuardedFetcher([feeds.hostport])), [feeds.base + "/gone.rss", feeds.base + "/news.rss"]
    )
    assert len(docs) == 3


def test_all_links_failing_raises(feeds) -> None:
    feeds.routes["/gone.rss"] = lambda r: (500, {}, b"")
    with pytest.raises(LiveSourceError) as info:
        _search(RssSource(GuardedFetcher([feeds.hostport])), [feeds.base + "/gone.rss"])
    assert info.value.source == "rss" and info.value.status == 500


def test_not_a_feed(feeds) -> None:
    feeds.routes["/page.html"] = lambda r: (
        200,
        {"content-type": "text/html"},
        b"<html><body>hi</body></html>",
    )
    with pytest.raises(LiveSourceError, match="feed"):
        _search(RssSource(GuardedFetcher([feeds.hostport])), [feeds.base + "/page.html"])


def test_feed_links_are_ssrf_guarded(feeds) -> None:
    with pytest.raises(LiveSourceError, match="refusing"):
        _search(RssSource(GuardedFetcher()), [feeds.base + "/news.rss"])
    assert feeds.requests == []
