"""Live context end to end: ``grokd serve`` (default SmolLM2) as a child process with its real
live flags, stand-ins on 127.0.0.1 for the external services (an RSS host and the X API v2
recent-search endpoint), driven by openai-python. Shows the fresh documents reaching the prompt
(``x-grokd-debug: live``), citations and ``num_sources_used``, the auto/on fallback, and the SSRF
guard refusing private targets through the real server."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from tests.server.serving import ServerProcess, free_port, start_process
from tests.server.stub_http import Reply, StubRequest, StubServer, serve_stub

KEY = "sk-e2e-live-000000"
X_TOKEN = "x-bearer-e2e"
FEED = (Path(__file__).resolve().parents[1] / "server" / "live" / "data" / "news.rss").read_bytes()
FEED_URLS = {
    "https://gazette.example/2026/11/24/ferry-resumes",
    "https://gazette.example/2026/11/20/harbour-wall",
    "https://gazette.example/2026/11/10/storm-warning",
}
FERRY = [{"role": "user", "content": "Is the ferry to the island running again after the storm?"}]
STARSHIP = [{"role": "user", "content": "What is the latest on the Starship launch?"}]
SOURCE_TIMEOUT_S = 2.0
DEBUG = {"x-grokd-debug": "live"}


def _feed(request: StubRequest) -> Reply:
    return 200, {"content-type": "application/rss+xml"}, FEED


def _slow_feed(request: StubRequest) -> Reply:
    time.sleep(SOURCE_TIMEOUT_S * 2)
    return _feed(request)


def _post(pid: str, author: str, text: str, minutes_ago: int) -> dict:
    created = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {"id": pid, "text": text, "author_id": author, "edit_history_tweet_ids": [pid],
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "public_metrics": {"retweet_count": 3, "reply_count": 1, "like_count": 40, "quote_count": 0,
                               "bookmark_count": 0, "impression_count": 9000}}


def _x_recent_search(request: StubRequest) -> Reply:
    """X API v2 ``GET /2/tweets/search/recent``: bearer auth, two pages joined by ``next_token``."""
    headers = {"content-type": "application/json", "x-rate-limit-limit": "450",
               "x-rate-limit-remaining": "449", "x-rate-limit-reset": str(int(time.time()) + 900)}
    if request.headers.get("authorization") != f"Bearer {X_TOKEN}":
        problem = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
        return 401, headers, json.dumps(problem).encode()
    users = [{"id": "u1", "name": "Ada", "username": "ada"}, {"id": "u2", "name": "Bob", "username": "bob"}]
    if request.query.get("next_token") == "page2":
        body = {"data": [_post("1003", "u2", "Starship launch replay is up", 30)],
                "includes": {"users": users[1:]}, "meta": {"result_count": 1}}
    else:
        body = {"data": [_post("1001", "u1", "Starship launch went well, booster caught", 5),
                         _post("1002", "u2", "Starship launch window opens at dawn", 9)],
                "includes": {"users": users}, "meta": {"result_count": 2, "next_token": "page2"}}
    return 200, headers, json.dumps(body).encode()


@pytest.fixture(scope="module")
def internal() -> Iterator[StubServer]:
    """A service on loopback that is NOT allow-listed: SSRF targets; must never be reached."""
    with serve_stub() as stub:
        stub.routes["/secret"] = _feed
        yield stub


@pytest.fixture(scope="module")
def stand_in(internal: StubServer) -> Iterator[StubServer]:
    """The allow-listed stand-in for external hosts: RSS feeds and the X API."""
    with serve_stub() as stub:
        stub.routes.update({
            "/news.rss": _feed,
            "/slow.rss": _slow_feed,
            "/broken.rss": lambda r: (500, {"content-type": "text/plain"}, b"upstream exploded"),
            "/redirect.rss": lambda r: (302, {"location": internal.base + "/secret"}, b""),
            "/2/tweets/search/recent": _x_recent_search,
        })
        yield stub


@pytest.fixture(scope="module")
def down_port() -> int:
    """Allow-listed, nothing listening: a source that is down."""
    return free_port()


@pytest.fixture(scope="module")
def server(smollm2_gguf, stand_in: StubServer, down_port: int, tmp_path_factory) -> Iterator[ServerProcess]:
    proc = start_process([
        "--dtype", "float32", "--max-model-len", "1024", "--api-key", KEY, "--log-level", "warning",
        "--state-dir", str(tmp_path_factory.mktemp("live-state")),
        "--live-allow-host", stand_in.hostport, "--live-allow-host", f"127.0.0.1:{down_port}",
        "--live-x-base-url", stand_in.base, "--live-source-timeout", str(SOURCE_TIMEOUT_S),
    ], env={"GROKD_X_BEARER_TOKEN": X_TOKEN})
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)  # 5xx must surface, not retry


@pytest.fixture(scope="module")
def model(client: OpenAI) -> str:
    return client.models.list().data[0].id


def _rss(mode: str, link: str) -> dict:
    return {"search_parameters": {"mode": mode, "sources": [{"type": "rss", "links": [link]}]}}


def _assert_context_was_the_prompt(client: OpenAI, model: str, question: list[dict], resp) -> str:
    """The debug block, checked to be exactly what was templated: the same question with that
    block as its system message counts the same prompt tokens (and more than without it)."""
    live = resp.debug["live_context"]
    assert live["searched"] and live["documents"] == resp.citations
    same = client.chat.completions.create(model=model, max_tokens=1,
                                          messages=[{"role": "system", "content": live["context"]}, *question])
    bare = client.chat.completions.create(model=model, max_tokens=1, messages=question)
    assert resp.usage.prompt_tokens == same.usage.prompt_tokens > bare.usage.prompt_tokens + 30
    return live["context"]


def test_rss_documents_reach_prompt_and_are_cited(client: OpenAI, model: str, stand_in: StubServer) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=FERRY, max_tokens=2, extra_headers=DEBUG,
        extra_body=_rss("on", stand_in.base + "/news.rss"))
    assert raw.headers["x-grokd-live-context"] == "used"
    resp = raw.parse()
    assert set(resp.citations) == FEED_URLS and len(resp.citations) == 3
    assert resp.usage.num_sources_used == len(resp.citations)
    assert resp.citations[0] == "https://gazette.example/2026/11/24/ferry-resumes"  # best keyword match first
    context = _assert_context_was_the_prompt(client, model, FERRY, resp)
    assert "The ferry to the island runs again from Wednesday & timetables are unchanged." in context
    assert "ferry" in resp.debug["live_context"]["query"].lower()
    assert stand_in.hits("/news.rss") == 1
    plain = client.chat.completions.create(model=model, messages=FERRY, max_tokens=1)
    assert getattr(plain, "citations", None) is None and getattr(plain, "debug", None) is None


def test_x_posts_from_stand_in_api(client: OpenAI, model: str, stand_in: StubServer) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=STARSHIP, max_tokens=2, extra_headers=DEBUG,
        extra_body={"search_parameters": {"mode": "on", "sources": [{"type": "x"}]}})
    assert raw.headers["x-grokd-live-context"] == "used"
    resp = raw.parse()
    assert set(resp.citations) == {"https://x.com/ada/status/1001", "https://x.com/bob/status/1002",
                                   "https://x.com/bob/status/1003"}
    assert resp.usage.num_sources_used == 3
    context = _assert_context_was_the_prompt(client, model, STARSHIP, resp)
    assert "Starship launch went well, booster caught" in context and "Starship launch replay is up" in context
    calls = [r for r in stand_in.requests if r.path == "/2/tweets/search/recent"]
    assert [r.query.get("next_token") for r in calls] == [None, "page2"]  # paged on meta.next_token
    assert all(r.headers["authorization"] == f"Bearer {X_TOKEN}" for r in calls)
    assert "starship" in calls[0].query["query"].lower() and "-is:retweet" in calls[0].query["query"]


DOWN = [  # (feed path or None for the dead port, status, code, text in the message)
    (None, 502, "live_source_unavailable", "rss"),
    ("/broken.rss", 502, "live_source_unavailable", "answered 500"),
    ("/slow.rss", 504, "live_source_timeout", "timed out"),
]


@pytest.mark.parametrize(("path", "status", "code", "why"), DOWN, ids=["refused", "http500", "timeout"])
def test_source_down_auto_degrades_on_errors(client: OpenAI, model: str, stand_in: StubServer, down_port: int,
                                             path: str | None, status: int, code: str, why: str) -> None:
    link = stand_in.base + path if path else f"http://127.0.0.1:{down_port}/feed.rss"
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=FERRY, max_tokens=2, extra_headers=DEBUG, extra_body=_rss("auto", link))
    assert raw.http_response.status_code == 200 and raw.headers["x-grokd-live-context"] == "degraded"
    resp = raw.parse()
    assert getattr(resp, "citations", None) is None and resp.usage.num_sources_used == 0
    assert resp.debug["live_context"]["degraded"] and resp.debug["live_context"]["context"] == ""
    assert resp.choices[0].message.content is not None  # answered in standard mode

    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model=model, messages=FERRY, max_tokens=2, extra_body=_rss("on", link))
    err = exc.value
    assert err.status_code == status and err.code == code and err.param == "search_parameters.sources"
    assert "rss" in err.message and why in err.message


@pytest.mark.parametrize("target", ["metadata", "loopback", "redirect"])
def test_ssrf_refused_through_the_server(client: OpenAI, model: str, stand_in: StubServer,
                                         internal: StubServer, target: str) -> None:
    link = {"metadata": "http://169.254.169.254/latest/meta-data",
            "loopback": internal.base + "/secret",
            "redirect": stand_in.base + "/redirect.rss"}[target]
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model=model, messages=FERRY, max_tokens=2, extra_body=_rss("on", link))
    err = exc.value
    assert err.status_code == 502 and err.code == "live_source_unavailable"
    assert "refusing to fetch" in err.message and "private, loopback or link-local" in err.message
    assert ("169.254.169.254" if target == "metadata" else internal.hostport) in err.message
    assert internal.requests == []  # nothing reached the private service
    assert stand_in.hits("/redirect.rss") == (1 if target == "redirect" else 0)
