"""X source over real HTTP against a stand-in speaking the API v2 recent-search wire format."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from grokd.server.live.base import LiveSourceError, SourceQuery
from grokd.server.live.http_guard import GuardedFetcher
from grokd.server.live.x import XConfig, XSource, build_query

TOKEN = "test-bearer"
NOW = datetime.now(UTC)


def _post(pid: str, author: str, text: str, likes: int, views: int, minutes_ago: int) -> dict:
    created = (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return {
        "id": pid,
        "text": text,
        "author_id": author,
        "created_at": created,
        "edit_history_tweet_ids": [pid],
        "public_metrics": {
            "retweet_count": 1,
            "reply_count": 0,
            "like_count": likes,
            "quote_count": 0,
            "bookmark_count": 0,
            "impression_count": views,
        },
    }


USERS = [{"id": "u1", "name": "Ada", "username": "ada"}, {"id": "u2", "name": "Bob", "username": "bob"}]
PAGES = {
    None: {
        "data": [
            _post("101", "u1", "Starship launch went well", 500, 90000, 5),
            _post("102", "u2", "starship launch delayed?", 2, 40, 9),
        ],
        "includes": {"users": USERS},
        "meta": {"result_count": 2, "newest_id": "102", "oldest_id": "101", "next_token": "page2"},
    },
    "page2": {
        "data": [_post("103", "u2", "Launch replay of Starship", 80, 12000, 30)],
        "includes": {"users": USERS[1:]},
        "meta": {"result_count": 1, "newest_id": "103", "oldest_id": "103"},
    },
}


def _json(status: int, body: dict, headers: dict | None = None):
    return status, {"content-type": "application/json", **(headers or {})}, json.dumps(body).encode()


def _x_api(request):
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return _json(
            401, {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
        )
    for key in ("query", "expansions", "user.fields", "tweet.fields", "max_results"):
        assert key in request.query, key
    page = PAGES.get(request.query.get("next_token"))
    return _json(
        200,
        page,
        {
            "x-rate-limit-limit": "450",
            "x-rate-limit-remaining": "440",
            "x-rate-limit-reset": str(int(time.time()) + 900),
        },
    )


def _source(stub, **config) -> XSource:
    return XSource(XConfig(TOKEN, stub.base, **config), GuardedFetcher([stub.hostport]))


def _search(source: XSource, **query):
    return asyncio.run(source.search(SourceQuery(**{"terms": ("starship", "launch"), **query})))


def test_paginates_and_builds_post_urls(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    docs = _search(_source(stub))
    assert [d.url for d in docs] == [
        "https://x.com/ada/status/101",
        "https://x.com/bob/status/102",
        "https://x.com/bob/status/103",
    ]
    assert docs[0].author == "@ada" and docs[0].text == "Starship launch went well"
    assert docs[0].published_at is not None and abs((docs[0].published_at - NOW).total_seconds() - -300) < 2
    assert [r.query.get("next_token") for r in stub.requests] == [None, "page2"]
    first = stub.requests[0].query
    assert first["expansions"] == "author_id" and "username" in first["user.fields"]
    assert "public_metrics" in first["tweet.fields"] and "created_at" in first["tweet.fields"]


def test_stops_paging_at_max_results(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    docs = _search(_source(stub), max_results=2)
    assert len(docs) == 2 and len(stub.requests) == 1


def test_min_favorites_and_views_filter_client_side(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    docs = _search(_source(stub), min_favorites=50, min_views=10000)
    assert [d.url.rsplit("/", 1)[1] for d in docs] == ["101", "103"]


def test_handles_and_dates_reach_the_query(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    start = NOW - timedelta(days=2)
    _search(_source(stub), included_handles=("ada", "bob"), from_time=start, to_time=NOW + timedelta(days=1))
    params = stub.requests[0].query
    assert "(from:ada OR from:bob)" in params["query"] and "-is:retweet" in params["query"]
    assert "(starship OR launch)" in params["query"]
    assert params["start_time"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
    end = datetime.fromisoformat(params["end_time"].replace("Z", "+00:00"))
    assert end <= datetime.now(UTC)  # clamped: recent search rejects future end_time


def test_excluded_handles_and_mentions() -> None:
    query = build_query(
        SourceQuery(terms=("rocket",), mentions=("spacex",), excluded_handles=("spam", "bot"))
    )
    assert query == "(@spacex OR rocket) -from:spam -from:bot -is:retweet"


def test_query_length_is_capped() -> None:
    terms = tuple(f"word{i:03d}" for i in range(200))
    assert len(build_query(SourceQuery(terms=terms))) <= 512


def test_range_outside_recent_window_returns_nothing(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    old = NOW - timedelta(days=30)
    assert _search(_source(stub), from_time=old, to_time=old + timedelta(days=1)) == []
    assert stub.requests == []


def test_short_rate_limit_is_waited_out(stub) -> None:
    calls = {"n": 0}

    def limited(request):
        calls["n"] += 1
        if calls["n"] == 1:
            return _json(
                429,
                {"title": "Too Many Requests", "status": 429, "detail": "Too Many Requests"},
                {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(time.time()) + 1)},
            )
        return _x_api(request)

    stub.routes["/2/tweets/search/recent"] = limited
    started = time.monotonic()
    docs = _search(_source(stub, max_rate_limit_wait_s=3.0), max_results=2)
    assert len(docs) == 2 and calls["n"] == 2
    assert time.monotonic() - started < 3.0


def test_long_rate_limit_raises(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = lambda r: _json(
        429,
        {"title": "Too Many Requests", "status": 429},
        {"x-rate-limit-remaining": "0", "x-rate-limit-reset": str(int(time.time()) + 600)},
    )
    with pytest.raises(LiveSourceError) as info:
        _search(_source(stub, max_rate_limit_wait_s=1.0))
    assert info.value.rate_limited and info.value.source == "x" and info.value.retry_after > 500
    assert len(stub.requests) == 1


def test_exhausted_window_stops_paging(stub) -> None:
    def last_call(request):
        status, headers, body = _x_api(request)
        headers["x-rate-limit-remaining"] = "0"
        return status, headers, body

    stub.routes["/2/tweets/search/recent"] = last_call
    docs = _search(_source(stub))
    assert len(docs) == 2 and len(stub.requests) == 1


def test_bad_token_is_an_http_error(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    source = XSource(XConfig("wrong", stub.base), GuardedFetcher([stub.hostport]))
    with pytest.raises(LiveSourceError) as info:
        _search(source)
    assert info.value.status == 401 and "Unauthorized" in str(info.value)


def test_x_base_url_must_be_allow_listed(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    source = XSource(XConfig(TOKEN, stub.base), GuardedFetcher())
    with pytest.raises(LiveSourceError, match="refusing"):
        _search(source)


def test_nothing_to_search_for_makes_no_call(stub) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    assert asyncio.run(_source(stub).search(SourceQuery(excluded_handles=("spam",)))) == []
    assert stub.requests == []
