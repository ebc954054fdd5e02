"""The on-prem firehose: ingestion validation, BM25 + recency ranking, injection-safe queries."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pytest

from grokd.server.live.base import SourceQuery
from grokd.server.live.local import IngestError, LocalConfig, LocalIndex, fts_query, parse_jsonl, parse_list

NOW = time.time()


def _iso(hours_ago: float) -> str:
    return datetime.fromtimestamp(NOW - hours_ago * 3600, UTC).isoformat()


DOCS = [
    {
        "id": "a",
        "url": "https://intra.example/a",
        "title": "Reactor maintenance scheduled",
        "text": "Reactor two goes offline for maintenance on Friday.",
        "author": "@ops",
        "published_at": _iso(2),
    },
    {
        "id": "b",
        "url": "https://intra.example/b",
        "title": "Reactor maintenance report",
        "text": "Last year's reactor maintenance report, reactor maintenance details.",
        "author": "@archive",
        "published_at": _iso(24 * 30),
    },
    {
        "url": "https://intra.example/c",
        "text": "Cafeteria menu: soup and bread.",
        "author": "@canteen",
        "published_at": _iso(1),
    },
]


@pytest.fixture
def index(tmp_path) -> LocalIndex:
    idx = LocalIndex(LocalConfig(tmp_path / "live.sqlite3"))
    idx.ingest_sync(parse_jsonl("\n".join(json.dumps(d) for d in DOCS)))
    return idx


def test_ingest_counts_and_upsert(tmp_path) -> None:
    idx = LocalIndex(LocalConfig(tmp_path / "live.sqlite3"))
    counts = idx.ingest_sync(parse_list(DOCS))
    assert counts == {"received": 3, "created": 3, "updated": 0, "total": 3}
    changed = dict(DOCS[0], text="Reactor two maintenance moved to Monday.")
    assert idx.ingest_sync(parse_list([changed])) == {"received": 1, "created": 0, "updated": 1, "total": 3}
    docs = idx.search_sync(SourceQuery(terms=("monday",)))
    assert [d.url for d in docs] == ["https://intra.example/a"]
    assert idx.search_sync(SourceQuery(terms=("friday",))) == []  # FTS rows follow updates


def test_wal_mode(index, tmp_path) -> None:
    db = sqlite3.connect(tmp_path / "live.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_recency_beats_slightly_better_old_match(index) -> None:
    docs = index.search_sync(SourceQuery(terms=("reactor", "maintenance")), now=NOW)
    assert [d.url for d in docs] == ["https://intra.example/a", "https://intra.example/b"]
    assert docs[0].score > docs[1].score > 0
    assert docs[0].source == "local" and docs[0].author == "@ops"


def test_bm25_orders_equally_fresh_documents(tmp_path) -> None:
    idx = LocalIndex(LocalConfig(tmp_path / "live.sqlite3"))
    idx.ingest_sync(
        parse_list(
            [
                {"url": "https://e.example/1", "text": "solar panel output", "published_at": _iso(1)},
                {
                    "url": "https://e.example/2",
                    "text": "solar solar solar output report",
                    "title": "Solar",
                    "published_at": _iso(1),
                },
            ]
        )
    )
    assert idx.search_sync(SourceQuery(terms=("solar",)), now=NOW)[0].url == "https://e.example/2"


def test_filters_dates_and_handles(index) -> None:
    q = SourceQuery(terms=("reactor",), from_time=datetime.fromtimestamp(NOW - 86400 * 7, UTC))
    assert [d.url for d in index.search_sync(q)] == ["https://intra.example/a"]
    q = SourceQuery(terms=("reactor",), excluded_handles=("ops",))
    assert [d.url for d in index.search_sync(q)] == ["https://intra.example/b"]
    q = SourceQuery(included_handles=("canteen",))
    assert [d.url for d in index.search_sync(q)] == ["https://intra.example/c"]


def test_no_terms_returns_newest(index) -> None:
    assert [d.url for d in index.search_sync(SourceQuery(max_results=2))] == [
        "https://intra.example/c",
        "https://intra.example/a",
    ]


ALL = {"a", "b", "c"}
REACTOR = {"a", "b"}


@pytest.mark.parametrize(
    ("hostile", "found"),
    [  # quoted words OR-ed: only the words count; no words at all lists the newest documents
        ('"', ALL),
        ('reactor" OR "x', REACTOR),
        ("title:reactor", REACTOR),
        ("NEAR(reactor maintenance)", REACTOR),
        ("reactor*", REACTOR),
        ("^reactor", REACTOR),
        ("(", ALL),
        ("AND", ALL),
        ("-reactor", REACTOR),
        ("'; DROP TABLE documents; --", set()),
        ("{title body}: reactor", REACTOR),
    ],
)
def test_fts_syntax_cannot_be_injected(index, hostile: str, found: set[str]) -> None:
    from grokd.server.live.textutil import keywords

    docs = index.search_sync(SourceQuery(text=hostile, terms=tuple(keywords(hostile))))
    assert {d.url.rsplit("/", 1)[1] for d in docs} == found
    assert len(index.search_sync(SourceQuery(max_results=10))) == 3  # table intact


def test_fts_query_quotes_even_raw_terms() -> None:
    assert fts_query(['a"b', "NEAR", "x"]) == '"a""b" OR "NEAR" OR "x"'


def test_bad_lines_are_named() -> None:
    body = "\n".join(
        [
            json.dumps(DOCS[0]),
            "{not json",
            json.dumps({"url": "ftp://x", "text": "t"}),
            "",
            json.dumps({"url": "https://ok.example", "text": ""}),
            json.dumps({"url": "https://ok.example", "text": "t", "published_at": "yesterday"}),
            json.dumps({"url": "https://ok.example", "text": "t", "colour": "red"}),
            json.dumps(["list"]),
        ]
    )
    with pytest.raises(IngestError) as info:
        parse_jsonl(body)
    lines = [n for n, _ in info.value.errors]
    assert lines == [2, 3, 5, 6, 7, 8]
    text = str(info.value)
    assert "line 2: invalid JSON" in text and "line 3: url" in text and "line 6: published_at" in text
    assert "line 7: unknown field(s) colour" in text


def test_epoch_and_naive_dates(tmp_path) -> None:
    records = parse_list(
        [
            {"url": "https://e.example/1", "text": "x", "published_at": 1_700_000_000},
            {"url": "https://e.example/2", "text": "x", "published_at": "2026-11-25T10:00:00"},
        ]
    )
    assert records[0].published_at == 1_700_000_000.0
    assert records[1].published_at == datetime(2026, 11, 25, 10, tzinfo=UTC).timestamp()


def test_async_search_runs_off_loop(index) -> None:
    import asyncio

    docs = asyncio.run(index.search(SourceQuery(terms=("cafeteria",))))
    assert [d.url for d in docs] == ["https://intra.example/c"]
    assert docs[0].published_at > datetime.now(UTC) - timedelta(hours=2)
