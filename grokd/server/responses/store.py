"""Stored responses: one SQLite file (WAL) under the state directory, next to the job store.

Each row holds the response object as answered, the conversation the model saw (template
messages, instructions excluded, plus the reply's own messages) for ``previous_response_id``,
the ``key_id`` of the API key that created it (a prefix of its sha256, never the key), and an expiry time;
expired rows are invisible at once and deleted on the next write. One connection guarded by a
lock keeps it thread-safe; every write is one transaction, so it survives restarts and crashes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Append-only: each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE responses (
            id TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            body TEXT NOT NULL,
            conversation TEXT NOT NULL
        )""",
        "CREATE INDEX responses_expiry ON responses (expires_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
DEFAULT_RETENTION_S = 30 * 24 * 3600.0  # xAI keeps stored responses for 30 days


class ResponseStoreError(Exception):
    """The store cannot be used (e.g. written by a newer grokd)."""


@dataclass
class StoredResponse:
    id: str
    owner: str  # key_id of the creating API key (jobs.tenancy; the anonymous key's without keys)
    body: dict[str, Any]  # the response object (JSON)
    conversation: list[dict[str, Any]]  # template messages to continue from


class ResponseStore:
    """Responses by id, scoped to the key that created them."""

    def __init__(self, state_dir: Path | str, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.path = Path(state_dir) / "responses.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.retention_s = retention_s
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ResponseStoreError(f"response store schema v{version} is newer than this grokd "
                                         f"(v{SCHEMA_VERSION})")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    for statement in MIGRATIONS[target - 1]:
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version={target}")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")

    def put(self, response_id: str, owner: str, body: dict[str, Any], conversation: list[dict[str, Any]],
            now: float | None = None) -> None:
        t = time.time() if now is None else now
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                self._conn.execute("DELETE FROM responses WHERE expires_at <= ?", (int(t),))
                self._conn.execute(
                    "INSERT OR REPLACE INTO responses (id, owner, created_at, expires_at, body, conversation)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (response_id, owner, int(t), int(t + self.retention_s), json.dumps(body),
                     json.dumps(conversation)),
                )
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def get(self, response_id: str, owner: str, now: float | None = None) -> StoredResponse | None:
        """The response if it exists, has not expired and belongs to ``owner``; else None (so
        another key cannot even learn that the id exists)."""
        t = time.time() if now is None else now
        with self._lock:
            row = self._conn.execute(
                "SELECT id, owner, body, conversation FROM responses WHERE id = ? AND owner = ? AND expires_at > ?",
                (response_id, owner, int(t)),
            ).fetchone()
        if row is None:
            return None
        return StoredResponse(row[0], row[1], json.loads(row[2]), json.loads(row[3]))

    def delete(self, response_id: str, owner: str) -> bool:
        with self._lock:
            cur = self._conn.execute("DELETE FROM responses WHERE id = ? AND owner = ?", (response_id, owner))
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._conn.close()
