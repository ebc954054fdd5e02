"""LiveContextService.augment end to end: real X + RSS stand-ins, local index, fallbacks."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from grokd.server.live import DEGRADED_HEADER, LiveConfig, LiveContextError, LiveContextService
from grokd.server.live.base import Document, SourceQuery
from grokd.server.live.local import parse_list

from .conftest import CharTokenizer
from .test_live_rss import DATA

NOW = datetime.now(UTC)
TOKEN = "svc-token"


def _x_api(request):
    created = (NOW - timedelta(minutes=3)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {
        "data": [
            {
                "id": "900",
                "text": "Ferry strike called off, boats sail tonight",
                "author_id": "7",
                "created_at": created,
                "public_metrics": {"like_count": 12, "impression_count": 800},
            }
        ],
        "includes": {"users": [{"id": "7", "name": "Port", "username": "portauthority"}]},
        "meta": {"result_count": 1},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


@pytest.fixture
def service(stub, tmp_path) -> LiveContextService:
    stub.routes["/2/tweets/search/recent"] = _x_api
    stub.routes["/news.rss"] = lambda r: (
        200,
        {"content-type": "application/rss+xml"},
        (DATA / "news.rss").read_bytes(),
    )
    svc = LiveContextService(
        LiveConfig(
            state_dir=tmp_path,
            x_bearer_token=TOKEN,
            x_base_url=stub.base,
            allowed_hosts=(stub.hostport,),
            source_timeout_s=3.0,
        )
    )
    svc.local.ingest_sync(
        parse_list(
            [
                {
                    "url": "https://intra.example/ferry",
                    "title": "Ferry desk",
                    "text": "Ferry timetable for tonight posted.",
                    "author": "@desk",
                    "published_at": (NOW - timedelta(hours=1)).isoformat(),
                },
            ]
        )
    )
    return svc


def _augment(svc, content: str, params: dict, budget: int = 2000):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": content}]
    return asyncio.run(svc.augment(messages, params, CharTokenizer(), budget))


def test_on_mode_uses_all_sources_and_cites_what_it_used(service, stub) -> None:
    params = {
        "mode": "on",
        "sources": [{"type": "x"}, {"type": "rss", "links": [stub.base + "/news.rss"]}, {"type": "local"}],
    }
    result = _augment(service, "Is the ferry running?", params)
    assert result.searched and not result.degraded
    urls = set(result.citations)
    assert {
        "https://x.com/portauthority/status/900",
        "https://intra.example/ferry",
        "https://gazette.example/2026/11/24/ferry-resumes",
    } <= urls
    assert result.num_sources_used == len(result.citations) == len(result.documents)
    for url in result.citations:
        assert url in result.context
    assert result.headers == {DEGRADED_HEADER: "used"}
    injected = result.inject([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}])
    assert injected[0]["content"].startswith("Be brief.\n\nLive search results")
    assert injected[1] == {"role": "user", "content": "q"}
    x_request = next(r for r in stub.requests if r.path == "/2/tweets/search/recent")
    assert "ferry" in x_request.query["query"]


def test_user_question_is_never_logged(service, stub, caplog) -> None:
    """Prompts are logged only under --log-prompts (by the routes); the live layer logs counts."""
    params = {
        "mode": "on",
        "sources": [{"type": "x"}, {"type": "rss", "links": [stub.base + "/news.rss"]}, {"type": "local"}],
    }
    question = "Is the ferry running tonight for my private quokka-7731 errand?"
    with caplog.at_level("INFO"):
        result = _augment(service, question, params)
    assert result.searched and result.documents
    # httpx's own request lines (the X search URL carries the terms) are silenced by
    # `grokd serve` unless --log-prompts: see test_serve_logging_keeps_search_urls_out
    ours = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("httpx", "httpcore")))
    assert "live context:" in ours
    for secret in ("quokka", "7731", "private", "errand"):
        assert secret not in ours


def test_serve_logging_keeps_search_urls_out() -> None:
    import logging

    from grokd.server.config import ServerConfig
    from grokd.server.serve_cli import configure_logging

    loggers = [logging.getLogger(n) for n in ("httpx", "httpcore")]
    saved = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.NOTSET)
        configure_logging(ServerConfig(log_prompts=True))
        assert all(lg.level == logging.NOTSET for lg in loggers)
        configure_logging(ServerConfig())
        assert all(not lg.isEnabledFor(logging.INFO) and lg.isEnabledFor(logging.WARNING) for lg in loggers)
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def test_max_search_results_and_citations_flag(service, stub) -> None:
    params = {
        "mode": "on",
        "max_search_results": 2,
        "return_citations": False,
        "sources": [{"type": "rss", "links": [stub.base + "/news.rss"]}, {"type": "local"}],
    }
    result = _augment(service, "ferry news", params)
    assert result.num_sources_used == 2 and result.citations == []


def test_token_budget_limits_documents(service, stub) -> None:
    params = {
        "mode": "on",
        "sources": [{"type": "rss", "links": [stub.base + "/news.rss"]}, {"type": "local"}],
    }
    full = _augment(service, "ferry", params, budget=5000)
    small = _augment(service, "ferry", params, budget=130)
    assert 0 < small.num_sources_used < full.num_sources_used
    assert len(CharTokenizer().encode(small.context)) <= 130


def test_default_sources_are_the_configured_ones(service, stub) -> None:
    result = _augment(service, "latest ferry news", {"mode": "auto"})
    assert {d.source for d in result.documents} == {"x", "local"}


def test_auto_skips_timeless_questions(service, stub) -> None:
    result = _augment(service, "explain how a ferry engine works", {"mode": "auto"})
    assert not result.searched and result.context == "" and stub.requests == []
    assert result.headers == {DEGRADED_HEADER: "skipped"}


def test_auto_searches_when_request_targets_a_feed(service, stub) -> None:
    params = {"sources": [{"type": "rss", "links": [stub.base + "/news.rss"]}]}
    assert _augment(service, "summarise these", params).num_sources_used == 3


def test_off_and_absent(service, stub) -> None:
    assert _augment(service, "latest news", {"mode": "off"}).headers == {}
    assert asyncio.run(service.augment([], None, CharTokenizer(), 100)).mode == "off"
    assert stub.requests == []


class _Slow:
    name = "web"

    async def search(self, query: SourceQuery) -> list[Document]:
        await asyncio.sleep(8)
        return []


def _with_slow_web(tmp_path) -> LiveContextService:
    svc = LiveContextService(LiveConfig(state_dir=tmp_path, source_timeout_s=1.5), sources={"web": _Slow()})
    svc.local.ingest_sync(parse_list([{"url": "https://intra.example/1", "text": "ferry news today"}]))
    return svc


def test_slow_source_in_auto_degrades(tmp_path) -> None:
    started = time.monotonic()
    result = _augment(_with_slow_web(tmp_path), "ferry news today", {"mode": "auto"})
    assert time.monotonic() - started < 5
    assert (
        result.degraded and result.context == "" and result.citations == [] and result.num_sources_used == 0
    )
    assert result.headers == {DEGRADED_HEADER: "degraded"} and "web: timed out" in result.errors[0]


def test_slow_source_in_on_is_504(tmp_path) -> None:
    with pytest.raises(LiveContextError) as info:
        _augment(_with_slow_web(tmp_path), "ferry", {"mode": "on"})
    assert (info.value.status, info.value.code, info.value.sources) == (504, "live_source_timeout", ["web"])


def test_dead_source_in_on_is_502(service, stub) -> None:
    stub.routes["/2/tweets/search/recent"] = lambda r: (503, {}, b"over capacity")
    with pytest.raises(LiveContextError) as info:
        _augment(service, "ferry", {"mode": "on", "sources": [{"type": "x"}, {"type": "local"}]})
    assert (info.value.status, info.value.code) == (502, "live_source_unavailable")
    assert "x: X API answered 503" in info.value.message


def test_ssrf_link_in_on_mode_is_refused(service) -> None:
    with pytest.raises(LiveContextError, match="refusing") as info:
        _augment(
            service,
            "feed",
            {"mode": "on", "sources": [{"type": "rss", "links": ["http://169.254.169.254/"]}]},
        )
    assert info.value.status == 502


def test_unconfigured_x_is_a_value_error(tmp_path) -> None:
    svc = LiveContextService(LiveConfig(state_dir=tmp_path))
    with pytest.raises(ValueError, match="GROKD_X_BEARER_TOKEN"):
        _augment(svc, "latest", {"sources": [{"type": "x"}]})


def test_config_reads_token_from_env(tmp_path) -> None:
    config = LiveConfig.from_env(
        {"GROKD_X_BEARER_TOKEN": "abc"}, state_dir=str(tmp_path), allowed_hosts=["h:1"]
    )
    assert config.x_bearer_token == "abc" and config.allowed_hosts == ("h:1",)
    assert "x" in LiveContextService(config).sources


def test_nothing_configured_auto_skips_on_is_400() -> None:
    svc = LiveContextService(LiveConfig())
    assert _augment(svc, "latest news", {"mode": "auto"}).headers == {DEGRADED_HEADER: "skipped"}
    with pytest.raises(ValueError, match="no live source is configured"):
        _augment(svc, "latest news", {"mode": "on"})
