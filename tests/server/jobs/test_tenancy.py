"""Tenants: with several API keys, every file, batch (and its result files) and deferred completion
belongs to the key that made it. A real server on 127.0.0.1 (the grok1-tiny fixture, token-id
prompts) with three keys, driven by openai-python: the other key gets 404 on every id and empty
lists; the admin key sees and manages everything. Also: a store written before objects had owners
migrates, its rows owned by the anonymous key."""

from __future__ import annotations

import json
import logging
import sqlite3
import time

import httpx
import openai
import pytest

from grokd.server.config import ServerConfig
from grokd.server.jobs.store import ANONYMOUS_OWNER, MIGRATIONS, SCHEMA_VERSION, JobStore
from tests.server.serving import LiveServer, start_server

ALICE, BOB, ADMIN = "sk-tenant-alice-0000", "sk-tenant-bob-11111", "sk-tenant-admin-222"


@pytest.fixture(scope="module")
def server(grok1_tiny_dir, grok1_tokenizer_path, tmp_path_factory) -> LiveServer:
    live = start_server(ServerConfig(model=str(grok1_tiny_dir), tokenizer=str(grok1_tokenizer_path), dtype="float32",
                                     state_dir=str(tmp_path_factory.mktemp("state")),
                                     api_key=[ALICE, BOB, f"{ADMIN} admin=true"]))
    yield live
    live.stop()


def _client(server: LiveServer, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=0)


def _batch_input(n: int = 2) -> bytes:
    return b"".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/completions",
                                "body": {"model": "grok1-tiny", "prompt": [5, 6, 7 + i], "max_tokens": 2}}).encode()
                    + b"\n" for i in range(n))


def _finished(client: openai.OpenAI, batch_id: str) -> openai.types.Batch:
    deadline = time.monotonic() + 60
    while (batch := client.batches.retrieve(batch_id)).status not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, batch.status
        time.sleep(0.1)
    return batch


def test_files_and_batches_belong_to_their_key(server: LiveServer) -> None:
    alice, bob, admin = (_client(server, k) for k in (ALICE, BOB, ADMIN))
    f = alice.files.create(file=("in.jsonl", _batch_input()), purpose="batch")
    bob_file = bob.files.create(file=("b.jsonl", _batch_input(1)), purpose="batch")
    # another key: the same 404 as an unknown id, on every route; lists show only one's own
    for call in (lambda: bob.files.retrieve(f.id), lambda: bob.files.content(f.id), lambda: bob.files.delete(f.id),
                 lambda: bob.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert [x.id for x in bob.files.list()] == [bob_file.id]
    assert [x.id for x in alice.files.list()] == [f.id]
    assert {x.id for x in admin.files.list()} >= {f.id, bob_file.id}

    batch = alice.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        bob.batches.retrieve(batch.id)
    with pytest.raises(openai.NotFoundError):
        bob.batches.cancel(batch.id)
    assert batch.id not in [b.id for b in bob.batches.list()]
    done = _finished(alice, batch.id)
    assert done.status == "completed" and done.output_file_id
    # the results belong to the batch's owner
    lines = alice.files.content(done.output_file_id).text.splitlines()
    assert sorted(json.loads(line)["custom_id"] for line in lines) == ["c0", "c1"]
    with pytest.raises(openai.NotFoundError):
        bob.files.content(done.output_file_id)
    # the admin sees and manages everyone's
    assert admin.batches.retrieve(batch.id).status == "completed"
    assert batch.id in [b.id for b in admin.batches.list()]
    assert admin.files.content(done.output_file_id).text.splitlines() == lines
    assert admin.files.delete(bob_file.id).deleted
    assert alice.files.delete(f.id).deleted


def test_deferred_completions_belong_to_their_key(server: LiveServer) -> None:
    body = {"model": "grok1-tiny", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2, "deferred": True}
    r = httpx.post(server.base_url + "/chat/completions", json=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert r.status_code == 200, r.text
    rid = r.json()["request_id"]
    url = f"{server.base_url}/chat/deferred-completion/{rid}"
    deadline = time.monotonic() + 30
    while (mine := httpx.get(url, headers={"Authorization": f"Bearer {ALICE}"})).status_code == 202:
        assert httpx.get(url, headers={"Authorization": f"Bearer {BOB}"}).status_code == 404
        assert time.monotonic() < deadline
        time.sleep(0.05)
    # the tiny model's 1,024-token vocabulary cannot hold the real tokenizer's ids: the stored answer
    # is that 400, delivered to Alice, and to her alone
    assert mine.status_code == 400 and "token ids must be in [0, 1024)" in mine.json()["error"]["message"], mine.text


def test_every_route_but_the_public_ones_needs_a_key(server: LiveServer) -> None:
    """Enumerated from the app itself, so that a new route cannot slip in unauthenticated."""
    from fastapi.routing import APIRoute

    from grokd.server.app import PUBLIC_PATHS

    def walk(routes: list) -> list[tuple[str, str]]:  # included routers keep theirs in original_router
        out = []
        for route in routes:
            if isinstance(route, APIRoute):
                out += [(method, route.path) for method in sorted(route.methods)]
            elif hasattr(route, "original_router"):
                out += walk(route.original_router.routes)
        return out

    routes = walk(server.app.routes)
    assert len(routes) > 20
    assert PUBLIC_PATHS - {"/openapi.json"} <= {path for _, path in routes}
    for method, path in routes:
        url = server.url + path.replace("{", "").replace("}", "")  # path parameters: any value
        r = httpx.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
        if path in PUBLIC_PATHS:
            assert r.status_code != 401, (method, path)
        else:
            assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
            assert r.json()["error"]["code"] == "invalid_api_key"


def test_keys_never_reach_logs_or_metrics(server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    """Whatever a key does (a good call, a wrong key, a forbidden id), only its hash prefix may show."""
    caplog.set_level(logging.DEBUG)
    alice = _client(server, ALICE)
    alice.completions.create(model="grok1-tiny", prompt=[5, 6, 7], max_tokens=2)
    with pytest.raises(openai.AuthenticationError):
        _client(server, ALICE + "-wrong").models.list()
    with pytest.raises(openai.NotFoundError):
        _client(server, BOB).files.retrieve("file-0000")
    metrics = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert "grokd_" in metrics
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for key in (ALICE, BOB, ADMIN, ALICE + "-wrong"):
        secret = key.removeprefix("sk-")
        assert secret not in metrics and secret not in logged, key


def test_a_store_from_before_owners_migrates_to_the_anonymous_owner(tmp_path) -> None:
    conn = sqlite3.connect(tmp_path / "jobs.sqlite3")
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version=1")
    conn.execute("INSERT INTO files (id, filename, purpose, bytes, created_at) VALUES ('file-old', 'a', 'batch', 0, 1)")
    conn.commit()
    conn.close()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "file-old").write_bytes(b"")
    store = JobStore(tmp_path)
    assert store.schema_version == SCHEMA_VERSION
    assert store.get_file("file-old")["owner"] == ANONYMOUS_OWNER
    assert [r["id"] for r in store.list_files(owner="someone-else")] == []
    assert store.add_file("b", "batch", [b"{}"], owner="k1")["owner"] == "k1"
