"""Query building, the auto heuristic, ranking/dedupe and the token-budgeted context block."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from grokd.server.live.base import Document, LiveSourceError, SourceQuery
from grokd.server.live.retrieval import (
    LiveContextError,
    build_query,
    fetch_all,
    rank,
    render_context,
    should_search,
)

from .conftest import CharTokenizer

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_query_from_last_user_turn_entities_first() -> None:
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "what did @elonmusk say about the Starship Flight 7 test?"}],
        },
    ]
    q = build_query(messages)
    assert q.mentions == ("elonmusk",)
    assert q.terms[:3] == ("starship", "flight", "7")
    assert "test" in q.terms and "elonmusk" not in q.terms and "what" not in q.terms


def test_short_follow_up_borrows_previous_turn() -> None:
    messages = [
        {"role": "user", "content": "Any news about the Lisbon marathon?"},
        {"role": "user", "content": "and now?"},
    ]
    assert "lisbon" in build_query(messages).terms


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What's happening in Berlin?", True),
        ("latest on the merger", True),
        ("what did @xai post", True),
        ("results from 2026-11-24", True),
        ("what happened on Nov 3rd", True),
        ("who won in 2026", True),
        ("breaking news please", True),
        ("write a haiku about autumn", False),
        ("explain quicksort", False),
        ("who won the 1998 world cup", False),
        ("email me at a@b.com", False),
    ],
)
def test_auto_heuristic(text: str, expected: bool) -> None:
    assert should_search(text, NOW) is expected


def _doc(url: str, text: str, hours: float | None, source: str = "x", title: str = "") -> Document:
    when = NOW - timedelta(hours=hours) if hours is not None else None
    return Document(source=source, url=url, title=title, text=text, published_at=when)


def test_rank_dedupes_urls_and_prefers_relevant_fresh() -> None:
    docs = [
        _doc("https://x.com/a/status/1", "volcano erupts", 1),
        _doc("https://twitter.com/a/status/1?s=20", "volcano erupts (dup)", 1, source="local"),
        _doc("https://news.example/old", "volcano erupts again", 24 * 20, source="rss"),
        _doc("https://news.example/cats", "cats", 1, source="rss"),
    ]
    ranked = rank(docs, ["volcano", "erupts"], NOW)
    assert [d.url for d in ranked] == [
        "https://x.com/a/status/1",
        "https://news.example/old",
        "https://news.example/cats",
    ]


def test_context_is_dated_numbered_and_within_budget() -> None:
    tok = CharTokenizer()
    docs = [_doc(f"https://e.example/{i}", "word " * 200, i, title=f"Title {i}") for i in range(10)]
    text, used = render_context(docs, tok, 400, NOW)
    assert 0 < len(used) < 10
    assert len(tok.encode(text)) <= 400
    assert "retrieved 2026-11-25 12:00 UTC" in text
    assert "[1] x · 2026-11-25 12:00 UTC · https://e.example/0" in text
    for i, doc in enumerate(used, start=1):
        assert f"[{i}] " in text and doc.url in text
    assert f"[{len(used) + 1}] " not in text


def test_long_document_is_clipped_to_fit() -> None:
    text, used = render_context(
        [_doc("https://e.example/long", "word " * 5000, 1)], CharTokenizer(), 300, NOW
    )
    assert used and len(CharTokenizer().encode(text)) <= 300 and text.endswith("…")


def test_no_budget_no_context() -> None:
    assert render_context([_doc("https://e.example/1", "x", 1)], CharTokenizer(), 10, NOW) == ("", [])
    assert render_context([], CharTokenizer(), 1000, NOW) == ("", [])


class _Sleepy:
    def __init__(self, name: str, delay: float, fail: bool = False) -> None:
        self.name, self.delay, self.fail = name, delay, fail

    async def search(self, query: SourceQuery) -> list[Document]:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise LiveSourceError(self.name, "upstream answered 500", status=500)
        return [_doc(f"https://{self.name}.example/1", "text", 1, source=self.name)]


def test_sources_run_concurrently_with_individual_timeouts() -> None:
    sources = [_Sleepy("a", 0.4), _Sleepy("b", 0.4), _Sleepy("c", 5.0)]
    started = time.monotonic()
    outcome = asyncio.run(fetch_all([(s, SourceQuery()) for s in sources], timeout_s=1.0))
    elapsed = time.monotonic() - started
    assert elapsed < 1.7  # run one after another it would take 0.4 + 0.4 + 1.0
    assert sorted(d.source for d in outcome.documents) == ["a", "b"]
    assert [(f.source, f.timeout) for f in outcome.failures] == [("c", True)]


def test_error_mapping() -> None:
    timeout = LiveSourceError("x", "timed out", timeout=True)
    down = LiveSourceError("rss", "500", status=500)
    limited = LiveSourceError("x", "rate limited", status=429, rate_limited=True, retry_after=42.2)
    err = LiveContextError.from_failures([down, timeout])
    assert (err.status, err.code, err.sources) == (504, "live_source_timeout", ["rss", "x"])
    err = LiveContextError.from_failures([down])
    assert (err.status, err.code) == (502, "live_source_unavailable") and "rss" in err.message
    assert err.body()["error"]["code"] == "live_source_unavailable"
    assert LiveContextError.from_failures([limited]).headers == {"Retry-After": "43"}


def test_budget_holds_with_the_engine_tokenizer(smollm2_tokenizer) -> None:
    docs = [
        _doc(f"https://e.example/{i}", "Ünïcode 🚀 prices rose 3.5% — “quotes” & code_snippets() " * 40, i)
        for i in range(8)
    ]
    for budget in (250, 600, 1500):
        text, used = render_context(docs, smollm2_tokenizer, budget, NOW)
        assert used and len(smollm2_tokenizer.encode(text)) <= budget
