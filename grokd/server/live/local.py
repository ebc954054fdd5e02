"""The on-prem firehose: documents pushed to ``POST /v1/live/documents``, searched with FTS5.

Sites without X access (or with their own feeds) push posts/articles as JSONL; they land in
``<state-dir>/live.sqlite3`` (WAL, so searches never wait for an ingest). Ranking is BM25
(title weighted above body) damped by age: ``score = -bm25 * 0.5 ** (age / half_life)``, so a
fresh, relevant post beats an old one that matches slightly better.

User text never reaches FTS5 syntax: queries are built only from letter/digit keywords, each
wrapped in double quotes (a string token in FTS5), joined with ``OR``. sqlite3 is blocking, so
every call runs in a worker thread with its own connection.
"""

from __future__ import annotations

import asyncio
import json
import math
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .base import Document, SourceQuery

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    rowid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL,
    title TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    author TEXT,
    source TEXT,
    published_at REAL,
    ingested_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_published ON documents(published_at);
CREATE VIRTUAL TABLE IF NOT EXISTS documents_fts USING fts5(
    title, body, author, content='documents', content_rowid='rowid',
    tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS documents_ai AFTER INSERT ON documents BEGIN
    INSERT INTO documents_fts(rowid, title, body, author) VALUES (new.rowid, new.title, new.body, new.author);
END;
CREATE TRIGGER IF NOT EXISTS documents_ad AFTER DELETE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, title, body, author)
    VALUES ('delete', old.rowid, old.title, old.body, old.author);
END;
CREATE TRIGGER IF NOT EXISTS documents_au AFTER UPDATE ON documents BEGIN
    INSERT INTO documents_fts(documents_fts, rowid, title, body, author)
    VALUES ('delete', old.rowid, old.title, old.body, old.author);
    INSERT INTO documents_fts(rowid, title, body, author) VALUES (new.rowid, new.title, new.body, new.author);
END;
"""

_FIELDS = {"id", "url", "title", "text", "author", "published_at", "source"}
MAX_TEXT_CHARS = 100_000


class IngestError(ValueError):
    """Some input lines are invalid; nothing was stored. ``errors`` are ``(line, message)``."""

    def __init__(self, errors: list[tuple[int, str]], unit: str = "line") -> None:
        self.errors = errors
        self.unit = unit
        shown = "; ".join(f"{unit} {n}: {m}" for n, m in errors[:10])
        more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
        super().__init__(f"{shown}{more}")


@dataclass(frozen=True)
class LocalConfig:
    path: Path
    half_life_hours: float = 24.0
    candidate_pool: int = 200


@dataclass(frozen=True)
class IngestRecord:
    doc_id: str
    url: str
    title: str
    text: str
    author: str | None
    source: str | None
    published_at: float | None


def parse_time(value: Any) -> float | None:
    """Epoch seconds from an ISO 8601 string (naive means UTC) or a number; raises ValueError."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("published_at must be an ISO 8601 string or epoch seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("published_at is not finite")
        return float(value)
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"published_at {value!r} is not ISO 8601") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    raise ValueError("published_at must be an ISO 8601 string or epoch seconds")


def validate_record(obj: Any) -> IngestRecord:
    """One ingest object to a record; raises ValueError naming the field."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object")
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    url = obj.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in {"http", "https"} or not urlsplit(url).netloc:
        raise ValueError("url must be an absolute http(s) URL")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ValueError("text must be a non-empty string")
    if len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"text is longer than {MAX_TEXT_CHARS} characters")
    for key in ("title", "author", "source"):
        if obj.get(key) is not None and not isinstance(obj[key], str):
            raise ValueError(f"{key} must be a string")
    doc_id = obj.get("id", url)
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or str(doc_id) == "":
        raise ValueError("id must be a non-empty string or an integer")
    return IngestRecord(
        doc_id=str(doc_id),
        url=url,
        title=obj.get("title") or "",
        text=text,
        author=obj.get("author"),
        source=obj.get("source"),
        published_at=parse_time(obj.get("published_at")),
    )


def parse_jsonl(body: str) -> list[IngestRecord]:
    """Validate every non-blank line; raise :class:`IngestError` listing all bad lines (1-based)."""
    records, errors = [], []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(validate_record(json.loads(line)))
        except json.JSONDecodeError as exc:
            errors.append((number, f"invalid JSON ({exc.msg} at column {exc.colno})"))
        except ValueError as exc:
            errors.append((number, str(exc)))
    if errors:
        raise IngestError(errors)
    return records


def parse_list(items: list[Any]) -> list[IngestRecord]:
    """Validate a JSON array of objects; errors name the 0-based index."""
    records, errors = [], []
    for index, item in enumerate(items):
        try:
            records.append(validate_record(item))
        except ValueError as exc:
            errors.append((index, str(exc)))
    if errors:
        raise IngestError(errors, unit="item")
    return records


def fts_query(terms: Iterable[str]) -> str:
    """An FTS5 MATCH expression that can only mean "any of these words"."""
    quoted = ['"' + t.replace('"', '""') + '"' for t in terms if t]
    return " OR ".join(quoted)


class LocalIndex:
    """:class:`~server.live.base.LiveSource` over the SQLite FTS5 index, plus ingestion."""

    name = "local"

    def __init__(self, config: LocalConfig) -> None:
        self._config = config
        config.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._config.path, timeout=10.0)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    async def ingest(self, records: list[IngestRecord]) -> dict[str, int]:
        return await asyncio.to_thread(self.ingest_sync, records)

    def ingest_sync(self, records: list[IngestRecord]) -> dict[str, int]:
        """Upsert by id (default: the URL); returns created/updated/total counts."""
        now = time.time()
        created = updated = 0
        db = self._connect()
        try:
            with db:
                for r in records:
                    exists = db.execute("SELECT 1 FROM documents WHERE doc_id = ?", (r.doc_id,)).fetchone()
                    db.execute(
                        """INSERT INTO documents(doc_id, url, title, body, author, source, published_at, ingested_at)
                           VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                           ON CONFLICT(doc_id) DO UPDATE SET url=excluded.url, title=excluded.title,
                             body=excluded.body, author=excluded.author, source=excluded.source,
                             published_at=excluded.published_at, ingested_at=excluded.ingested_at""",
                        (r.doc_id, r.url, r.title, r.text, r.author, r.source, r.published_at, now),
                    )
                    if exists:
                        updated += 1
                    else:
                        created += 1
            total = db.execute("SELECT count(*) FROM documents").fetchone()[0]
        finally:
            db.close()
        return {"received": len(records), "created": created, "updated": updated, "total": total}

    async def search(self, query: SourceQuery) -> list[Document]:
        return await asyncio.to_thread(self.search_sync, query)

    def search_sync(self, query: SourceQuery, now: float | None = None) -> list[Document]:
        now = time.time() if now is None else now
        where, args = self._filters(query)
        match = fts_query(query.terms + tuple(query.mentions))
        db = self._connect()
        try:
            if match:
                sql = (
                    "SELECT d.url, d.title, d.body, d.author, d.source, d.published_at, d.ingested_at, "
                    "bm25(documents_fts, 3.0, 1.0, 2.0) AS rank FROM documents_fts "
                    "JOIN documents d ON d.rowid = documents_fts.rowid "
                    f"WHERE documents_fts MATCH ? {''.join(' AND ' + w for w in where)} ORDER BY rank LIMIT ?"
                )
                rows = db.execute(sql, (match, *args, self._config.candidate_pool)).fetchall()
            else:  # nothing to match: the newest documents within the filters
                sql = (
                    "SELECT url, title, body, author, source, published_at, ingested_at, -1.0 FROM documents d "
                    f"{'WHERE ' + ' AND '.join(where) if where else ''} "
                    "ORDER BY coalesce(published_at, ingested_at) DESC LIMIT ?"
                )
                rows = db.execute(sql, (*args, self._config.candidate_pool)).fetchall()
        finally:
            db.close()
        half_life = self._config.half_life_hours * 3600.0
        docs = []
        for url, title, body, author, source, published, ingested, rank in rows:
            age = max(0.0, now - (published if published is not None else ingested))
            docs.append(
                Document(
                    source=self.name,
                    url=url,
                    title=title or (source or ""),
                    text=body,
                    author=author,
                    published_at=datetime.fromtimestamp(published, UTC) if published is not None else None,
                    score=-rank * 0.5 ** (age / half_life),
                )
            )
        docs.sort(key=lambda d: d.score, reverse=True)
        return docs[: query.max_results]

    @staticmethod
    def _filters(query: SourceQuery) -> tuple[list[str], list[Any]]:
        where: list[str] = []
        args: list[Any] = []
        if query.from_time is not None:
            where.append("d.published_at >= ?")
            args.append(query.from_time.timestamp())
        if query.to_time is not None:
            where.append("d.published_at <= ?")
            args.append(query.to_time.timestamp())
        if query.included_handles:
            where.append(f"lower(ltrim(d.author, '@')) IN ({','.join('?' * len(query.included_handles))})")
            args.extend(h.lower().lstrip("@") for h in query.included_handles)
        if query.excluded_handles:
            where.append(
                f"(d.author IS NULL OR lower(ltrim(d.author, '@')) NOT IN ({','.join('?' * len(query.excluded_handles))}))"
            )
            args.extend(h.lower().lstrip("@") for h in query.excluded_handles)
        return where, args
