"""The SQLite job store: migrations, atomic files, one-result-per-line, deferred delivery."""

from __future__ import annotations

import sqlite3

import pytest

from grokd.server.jobs.store import SCHEMA_VERSION, JobStore, StoreError, write_atomic


def test_fresh_store_is_migrated_and_reopens(tmp_path):
    store = JobStore(tmp_path)
    assert store.schema_version == SCHEMA_VERSION >= 1
    store.close()
    conn = sqlite3.connect(tmp_path / "jobs.sqlite3")
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"files", "batches", "batch_lines", "deferred"} <= tables
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    again = JobStore(tmp_path)  # idempotent: no migration re-applied
    assert again.schema_version == SCHEMA_VERSION


def test_newer_schema_is_refused(tmp_path):
    JobStore(tmp_path).close()
    conn = sqlite3.connect(tmp_path / "jobs.sqlite3")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError):
        JobStore(tmp_path)


def test_atomic_write_leaves_no_temp_and_cleans_strays(tmp_path):
    store = JobStore(tmp_path)
    row = store.add_file("in.jsonl", "batch", [b"a", b"b"])
    assert store.file_path(row["id"]).read_bytes() == b"ab" and row["bytes"] == 2
    assert not list(store.files_dir.glob(".*.tmp"))

    def boom():
        yield b"partial"
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_atomic(store.files_dir / "x", boom())
    assert not (store.files_dir / "x").exists() and not list(store.files_dir.glob(".*.tmp"))
    (store.files_dir / ".leftover.tmp").write_bytes(b"junk")  # as if killed before rename
    (store.files_dir / "file-orphan").write_bytes(b"{}")  # as if killed before its row committed
    store.close()
    reopened = JobStore(tmp_path)
    assert sorted(p.name for p in reopened.files_dir.iterdir()) == [row["id"]]


def test_files_list_and_delete(tmp_path):
    store = JobStore(tmp_path)
    ids = [store.add_file(f"{i}.jsonl", "batch", [b"{}"])["id"] for i in range(3)]
    assert [f["id"] for f in store.list_files(order="asc")] == ids
    assert [f["id"] for f in store.list_files(order="asc", after=ids[0])] == ids[1:]
    assert store.delete_file(ids[1]) and not store.delete_file(ids[1])
    assert not store.file_path(ids[1]).exists()


def _batch(store: JobStore, lines: list[tuple[str, dict]]) -> str:
    file_id = store.add_file("in.jsonl", "batch", [b"{}"])["id"]
    batch = store.create_batch(file_id, "/v1/chat/completions", "24h", 86400, {"k": "v"})
    assert batch["status"] == "validating"
    assert store.start_batch(batch["id"], lines)
    return batch["id"]


def test_start_batch_is_all_or_nothing(tmp_path):
    store = JobStore(tmp_path)
    file_id = store.add_file("in.jsonl", "batch", [b"{}"])["id"]
    batch_id = store.create_batch(file_id, "/v1/completions", "24h", 86400, None)["id"]
    with pytest.raises(sqlite3.IntegrityError):  # duplicate custom_id violates UNIQUE mid-insert
        store.start_batch(batch_id, [("a", {}), ("b", {}), ("a", {})])
    assert store.get_batch(batch_id)["status"] == "validating"
    assert store.line_counts(batch_id)["pending"] == 0


def test_each_line_gets_exactly_one_result(tmp_path):
    store = JobStore(tmp_path)
    batch_id = _batch(store, [("a", {"x": 1}), ("b", {"x": 2})])
    assert store.record_result(batch_id, 0, "done", {"status_code": 200}, None)
    assert not store.record_result(batch_id, 0, "failed", {"status_code": 500}, None)  # first one wins
    assert store.close_pending(batch_id, "cancelled", {"code": "batch_cancelled"}) == 1
    counts = store.line_counts(batch_id)
    assert counts["done"] == 1 and counts["cancelled"] == 1 and counts["pending"] == 0
    assert [line["status"] for line in store.iter_lines(batch_id, page=1)] == ["done", "cancelled"]


def test_results_survive_reopen(tmp_path):
    store = JobStore(tmp_path)
    batch_id = _batch(store, [("a", {}), ("b", {})])
    store.record_result(batch_id, 1, "done", {"status_code": 200, "body": {"ok": True}}, None)
    store.close()  # (a kill -9 leaves the same committed WAL state)
    store = JobStore(tmp_path)
    assert [r["custom_id"] for r in store.pending_lines(batch_id, 10)] == ["a"]


def test_deferred_delivered_once_and_expires(tmp_path):
    store = JobStore(tmp_path)
    store.add_deferred("r1", {"model": "m"}, now=1000, retention_s=100)
    assert store.take_deferred("r1", now=1001) == ("pending", None, None)
    assert store.set_deferred_result("r1", 200, {"id": "c"})
    assert store.take_deferred("r1", now=1002) == ("ready", 200, {"id": "c"})
    assert store.take_deferred("r1", now=1003)[0] == "missing"
    store.add_deferred("r2", {}, now=1000, retention_s=100)
    store.set_deferred_result("r2", 200, {})
    assert store.take_deferred("r2", now=1100)[0] == "missing"
    assert store.purge_deferred(now=1100) == 2
    assert store.take_deferred("nope", now=0)[0] == "missing"
