"""The durable job store: one SQLite file (WAL) plus a directory of files written atomically.

Every state change that matters after a crash (a file upload, a batch's validation, one line's
result, a deferred result) is one transaction, so ``kill -9`` at any instant leaves either the
old state or the new one. One connection guarded by a lock keeps it thread-safe: FastAPI runs
sync handlers in a thread pool while the runner writes from the event loop.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The owner of objects made without API keys (an open server, the offline batch CLI) and of rows
# stored before objects had owners: the anonymous key's id (``server.auth.ANONYMOUS``).
ANONYMOUS_OWNER = "anonymous"

# Append-only: each entry upgrades the schema by one version (PRAGMA user_version).
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE files (
            id TEXT PRIMARY KEY,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )""",
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            input_file_id TEXT NOT NULL,
            endpoint TEXT NOT NULL,
            completion_window TEXT NOT NULL,
            status TEXT NOT NULL,
            metadata TEXT,
            errors TEXT,
            output_file_id TEXT,
            error_file_id TEXT,
            total INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            in_progress_at INTEGER,
            finalizing_at INTEGER,
            completed_at INTEGER,
            failed_at INTEGER,
            expired_at INTEGER,
            cancelling_at INTEGER,
            cancelled_at INTEGER
        )""",
        "CREATE INDEX batches_status ON batches (status)",
        """CREATE TABLE batch_lines (
            batch_id TEXT NOT NULL REFERENCES batches (id),
            line_no INTEGER NOT NULL,
            id TEXT NOT NULL,
            custom_id TEXT NOT NULL,
            body TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            result TEXT,
            error TEXT,
            finished_at INTEGER,
            PRIMARY KEY (batch_id, line_no),
            UNIQUE (batch_id, custom_id)
        )""",
        "CREATE INDEX batch_lines_status ON batch_lines (batch_id, status)",
        """CREATE TABLE deferred (
            request_id TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            status_code INTEGER,
            result TEXT,
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            delivered INTEGER NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX deferred_status ON deferred (status)",
    ),
    (  # v2: every stored object belongs to the API key that made it (``server.jobs.tenancy``)
        f"ALTER TABLE files ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS_OWNER}'",
        f"ALTER TABLE batches ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS_OWNER}'",
        f"ALTER TABLE deferred ADD COLUMN owner TEXT NOT NULL DEFAULT '{ANONYMOUS_OWNER}'",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)
TERMINAL_BATCH = ("failed", "completed", "expired", "cancelled")
LINE_STATUSES = ("pending", "done", "failed", "expired", "cancelled")


class StoreError(Exception):
    """The store cannot be used (e.g. written by a newer grokd)."""


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:24]}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, chunks: Iterable[bytes]) -> int:
    """Write ``chunks`` to ``path`` via a temp file + fsync + rename; returns the byte count."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    size = 0
    try:
        with open(tmp, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                size += len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return size


def _row(row: sqlite3.Row | None) -> dict[str, Any] | None:
    return None if row is None else dict(row)


class JobStore:
    """Files, batches, batch lines and deferred requests under one state directory."""

    def __init__(self, state_dir: Path | str, synchronous: str = "FULL") -> None:
        self.state_dir = Path(state_dir)
        self.files_dir = self.state_dir / "files"
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(
            self.state_dir / "jobs.sqlite3", check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute(f"PRAGMA synchronous={synchronous}")
        self._conn.execute("PRAGMA foreign_keys=ON")
        self._migrate()
        self._remove_stray_temp_files()

    # -- plumbing ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(f"job store schema v{version} is newer than this grokd (v{SCHEMA_VERSION})")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self._tx() as conn:
                    for statement in MIGRATIONS[target - 1]:
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={target}")

    def _remove_stray_temp_files(self) -> None:
        """A crash between writing a file and committing its row leaves a ``.tmp`` or an
        unrecorded ``file-*`` (a half-finalized batch writes new ones on resume); drop both."""
        for path in self.files_dir.glob(".*.tmp"):
            path.unlink(missing_ok=True)
        known = {row["id"] for row in self._all("SELECT id FROM files")}
        for path in self.files_dir.glob("file-*"):
            if path.name not in known:
                path.unlink(missing_ok=True)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        with self._lock:
            return _row(self._conn.execute(sql, args).fetchone())

    def _all(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._conn.execute(sql, args).fetchall()]

    @property
    def schema_version(self) -> int:
        with self._lock:
            return self._conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # -- files ------------------------------------------------------------------------------

    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def temp_upload_path(self) -> Path:
        return self.files_dir / f".upload-{uuid.uuid4().hex}.tmp"

    def add_file(self, filename: str, purpose: str, chunks: Iterable[bytes],
                 owner: str = ANONYMOUS_OWNER) -> dict[str, Any]:
        """Store content atomically, then its row; a crash in between leaves only an orphan."""
        file_id = new_id("file-")
        size = write_atomic(self.file_path(file_id), chunks)
        return self._insert_file(file_id, filename, purpose, size, owner)

    def adopt_file(self, tmp: Path, filename: str, purpose: str, owner: str = ANONYMOUS_OWNER) -> dict[str, Any]:
        """Move an already fsynced upload temp file into place and record it."""
        file_id = new_id("file-")
        os.replace(tmp, self.file_path(file_id))
        _fsync_dir(self.files_dir)
        return self._insert_file(file_id, filename, purpose, self.file_path(file_id).stat().st_size, owner)

    def _insert_file(self, file_id: str, filename: str, purpose: str, size: int, owner: str) -> dict[str, Any]:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO files (id, filename, purpose, bytes, created_at, owner) VALUES (?, ?, ?, ?, ?, ?)",
                (file_id, filename, purpose, size, int(time.time()), owner),
            )
        return self.get_file(file_id)  # type: ignore[return-value]

    def get_file(self, file_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM files WHERE id = ?", (file_id,))

    def list_files(
        self, purpose: str | None = None, limit: int = 10000, after: str | None = None, order: str = "desc",
        owner: str | None = None,
    ) -> list[dict[str, Any]]:
        """``owner``: only that key's files (``None``: everyone's)."""
        direction = "ASC" if order == "asc" else "DESC"
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if purpose:
            where.append("purpose = ?")
            args.append(purpose)
        if after:
            anchor = self.get_file(after)
            if anchor is not None:
                cmp = ">" if direction == "ASC" else "<"
                where.append(f"(created_at, rowid) {cmp} (?, (SELECT rowid FROM files WHERE id = ?))")
                args += [anchor["created_at"], after]
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sql = f"SELECT * FROM files {clause} ORDER BY created_at {direction}, rowid {direction} LIMIT ?"
        return self._all(sql, (*args, limit))

    def delete_file(self, file_id: str) -> bool:
        with self._tx() as conn:
            deleted = conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
        if deleted:
            self.file_path(file_id).unlink(missing_ok=True)
        return deleted

    # -- batches ----------------------------------------------------------------------------

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        window_s: float,
        metadata: dict | None,
        batch_id: str | None = None,
        now: float | None = None,
        owner: str = ANONYMOUS_OWNER,
    ) -> dict[str, Any]:
        now_i = int(time.time() if now is None else now)
        batch_id = batch_id or new_id("batch_")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO batches (id, input_file_id, endpoint, completion_window, status, metadata,"
                " created_at, expires_at, owner) VALUES (?, ?, ?, ?, 'validating', ?, ?, ?, ?)",
                (
                    batch_id,
                    input_file_id,
                    endpoint,
                    completion_window,
                    json.dumps(metadata) if metadata is not None else None,
                    now_i,
                    now_i + int(window_s),
                    owner,
                ),
            )
        return self.get_batch(batch_id)  # type: ignore[return-value]

    def get_batch(self, batch_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM batches WHERE id = ?", (batch_id,))

    def list_batches(self, limit: int = 20, after: str | None = None, owner: str | None = None) -> list[dict[str, Any]]:
        """Newest first; ``after`` is the id of the last batch of the previous page; ``owner``:
        only that key's batches (``None``: everyone's)."""
        where, args = ["(? IS NULL OR owner = ?)"], [owner, owner]
        if after and self.get_batch(after) is not None:
            where.append("rowid < (SELECT rowid FROM batches WHERE id = ?)")
            args.append(after)
        return self._all(f"SELECT * FROM batches WHERE {' AND '.join(where)} ORDER BY rowid DESC LIMIT ?",
                         (*args, limit))

    def batches_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        marks = ",".join("?" * len(statuses))
        return self._all(f"SELECT * FROM batches WHERE status IN ({marks}) ORDER BY rowid", statuses)

    def start_batch(self, batch_id: str, lines: list[tuple[str, dict]], now: float | None = None) -> bool:
        """Insert all validated lines and move ``validating`` -> ``in_progress`` in one transaction."""
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            moved = conn.execute(
                "UPDATE batches SET status = 'in_progress', in_progress_at = ?, total = ?"
                " WHERE id = ? AND status = 'validating'",
                (now_i, len(lines), batch_id),
            ).rowcount
            if not moved:
                return False
            conn.executemany(
                "INSERT INTO batch_lines (batch_id, line_no, id, custom_id, body) VALUES (?, ?, ?, ?, ?)",
                (
                    (batch_id, no, new_id("batch_req_"), custom_id, json.dumps(body))
                    for no, (custom_id, body) in enumerate(lines)
                ),
            )
        return True

    def fail_batch(self, batch_id: str, errors: list[dict], now: float | None = None) -> None:
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            conn.execute(
                "UPDATE batches SET status = 'failed', failed_at = ?, errors = ? WHERE id = ?",
                (now_i, json.dumps({"object": "list", "data": errors}), batch_id),
            )

    def request_cancel(self, batch_id: str, now: float | None = None) -> dict[str, Any] | None:
        """``validating``/``in_progress`` -> ``cancelling``; other states are returned unchanged."""
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            conn.execute(
                "UPDATE batches SET status = 'cancelling', cancelling_at = ?"
                " WHERE id = ? AND status IN ('validating', 'in_progress')",
                (now_i, batch_id),
            )
        return self.get_batch(batch_id)

    def set_finalizing(self, batch_id: str, now: float | None = None) -> None:
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            conn.execute(
                "UPDATE batches SET status = 'finalizing', finalizing_at = ?"
                " WHERE id = ? AND status = 'in_progress'",
                (now_i, batch_id),
            )

    def finish_batch(
        self,
        batch_id: str,
        status: str,
        output: tuple[str, str, Iterable[bytes]] | None,
        errors: tuple[str, str, Iterable[bytes]] | None,
        now: float | None = None,
    ) -> None:
        """Write result files (``(filename, purpose, content)``) and the terminal status at once.

        The file contents are written and fsynced first; their rows and the status change are
        one transaction, so a crash here only leaves orphan files and finalizing runs again.
        """
        now_i = int(time.time() if now is None else now)
        written: dict[str, tuple[str, str, str, int]] = {}
        for key, spec in (("output", output), ("error", errors)):
            if spec is not None:
                file_id = new_id("file-")
                size = write_atomic(self.file_path(file_id), spec[2])
                written[key] = (file_id, spec[0], spec[1], size)
        stamp = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[status]
        with self._tx() as conn:
            for file_id, filename, purpose, size in written.values():  # the batch's owner owns its results
                conn.execute(
                    "INSERT INTO files (id, filename, purpose, bytes, created_at, owner)"
                    " SELECT ?, ?, ?, ?, ?, owner FROM batches WHERE id = ?",
                    (file_id, filename, purpose, size, now_i, batch_id),
                )
            conn.execute(
                f"UPDATE batches SET status = ?, {stamp} = ?, output_file_id = ?, error_file_id = ?"
                " WHERE id = ?",
                (
                    status,
                    now_i,
                    written["output"][0] if "output" in written else None,
                    written["error"][0] if "error" in written else None,
                    batch_id,
                ),
            )

    # -- batch lines ------------------------------------------------------------------------

    def pending_lines(self, batch_id: str, limit: int, after_line: int = -1) -> list[dict[str, Any]]:
        return self._all(
            "SELECT line_no, id, custom_id, body FROM batch_lines"
            " WHERE batch_id = ? AND status = 'pending' AND line_no > ? ORDER BY line_no LIMIT ?",
            (batch_id, after_line, limit),
        )

    def record_result(
        self,
        batch_id: str,
        line_no: int,
        status: str,
        result: dict | None,
        error: dict | None,
        now: float | None = None,
    ) -> bool:
        """Commit one line's outcome; a line that already has one keeps it (no double results)."""
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            return (
                conn.execute(
                    "UPDATE batch_lines SET status = ?, result = ?, error = ?, finished_at = ?"
                    " WHERE batch_id = ? AND line_no = ? AND status = 'pending'",
                    (
                        status,
                        json.dumps(result) if result is not None else None,
                        json.dumps(error) if error is not None else None,
                        now_i,
                        batch_id,
                        line_no,
                    ),
                ).rowcount
                > 0
            )

    def close_pending(self, batch_id: str, status: str, error: dict, now: float | None = None) -> int:
        """Give every still-pending line the same terminal ``status`` (expired or cancelled)."""
        now_i = int(time.time() if now is None else now)
        with self._tx() as conn:
            return conn.execute(
                "UPDATE batch_lines SET status = ?, error = ?, finished_at = ?"
                " WHERE batch_id = ? AND status = 'pending'",
                (status, json.dumps(error), now_i, batch_id),
            ).rowcount

    def line_counts(self, batch_id: str) -> dict[str, int]:
        counts = dict.fromkeys(LINE_STATUSES, 0)
        for row in self._all(
            "SELECT status, COUNT(*) AS n FROM batch_lines WHERE batch_id = ? GROUP BY status", (batch_id,)
        ):
            counts[row["status"]] = row["n"]
        return counts

    def iter_lines(self, batch_id: str, page: int = 1000) -> Iterator[dict[str, Any]]:
        last = -1
        while True:
            rows = self._all(
                "SELECT * FROM batch_lines WHERE batch_id = ? AND line_no > ? ORDER BY line_no LIMIT ?",
                (batch_id, last, page),
            )
            if not rows:
                return
            yield from rows
            last = rows[-1]["line_no"]

    # -- deferred completions ---------------------------------------------------------------

    def add_deferred(self, request_id: str, body: dict, now: float, retention_s: float,
                     owner: str = ANONYMOUS_OWNER) -> None:
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO deferred (request_id, body, created_at, expires_at, owner) VALUES (?, ?, ?, ?, ?)",
                (request_id, json.dumps(body), int(now), int(now + retention_s), owner),
            )

    def pending_deferred(self) -> list[dict[str, Any]]:
        return self._all("SELECT * FROM deferred WHERE status = 'pending' ORDER BY created_at")

    def get_deferred(self, request_id: str) -> dict[str, Any] | None:
        return self._one("SELECT * FROM deferred WHERE request_id = ?", (request_id,))

    def set_deferred_result(self, request_id: str, status_code: int, body: dict) -> bool:
        with self._tx() as conn:
            return (
                conn.execute(
                    "UPDATE deferred SET status = 'done', status_code = ?, result = ?"
                    " WHERE request_id = ? AND status = 'pending'",
                    (status_code, json.dumps(body), request_id),
                ).rowcount
                > 0
            )

    def take_deferred(self, request_id: str, now: float, owner: str | None = None
                      ) -> tuple[str, int | None, dict | None]:
        """``("pending", None, None)``, ``("ready", status, body)`` exactly once, else ``("missing", ...)``;
        another ``owner``'s request is missing (``None``: anyone's)."""
        with self._tx() as conn:
            row = conn.execute("SELECT * FROM deferred WHERE request_id = ?", (request_id,)).fetchone()
            if row is None or row["delivered"] or row["expires_at"] <= now or owner not in (None, row["owner"]):
                return "missing", None, None
            if row["status"] == "pending":
                return "pending", None, None
            conn.execute("UPDATE deferred SET delivered = 1, result = NULL WHERE request_id = ?", (request_id,))
            return "ready", row["status_code"], json.loads(row["result"])

    def purge_deferred(self, now: float) -> int:
        """Drop expired and already delivered entries (retention is 24 h by default)."""
        with self._tx() as conn:
            return conn.execute(
                "DELETE FROM deferred WHERE expires_at <= ? OR delivered = 1", (int(now),)
            ).rowcount
