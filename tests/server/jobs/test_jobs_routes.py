"""Files / Batches / deferred routes over HTTP (FastAPI TestClient, H4's error envelope)."""

from __future__ import annotations

import contextlib
import json
import time

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from grokd.server.app import JOBS_ROUTERS
from grokd.server.errors import install_error_handlers
from grokd.server.jobs import JobsConfig, JobsService
from grokd.server.jobs.deps import get_jobs

from .jobs_helpers import FakeExecutor, answer_for, chat_line, jsonl


def _app(tmp_path, executor, **config) -> tuple[FastAPI, JobsService]:
    jobs = JobsService(
        JobsConfig(state_dir=tmp_path, poll_interval_s=0.05, **config),
        executor,
        model_exists=lambda m: m == "test-model",
    )

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await jobs.start()
        yield
        await jobs.stop()

    app = FastAPI(lifespan=lifespan)
    app.dependency_overrides[get_jobs] = lambda: jobs  # the routes alone, without a model behind them
    install_error_handlers(app)
    for router in JOBS_ROUTERS:
        app.include_router(router)
    return app, jobs


@pytest.fixture
def client(tmp_path):
    app, _ = _app(tmp_path, FakeExecutor(), max_upload_bytes=4096)
    with TestClient(app) as c:
        yield c


def _upload(client, data: bytes, purpose: str = "batch", name: str = "in.jsonl"):
    return client.post("/v1/files", files={"file": (name, data, "application/jsonl")}, data={"purpose": purpose})


def _wait(client, batch_id: str, statuses=("completed", "failed", "cancelled", "expired"), timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in statuses:
            return batch
        time.sleep(0.02)
    raise AssertionError(f"batch stuck in {batch['status']}")


def _error(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    if code:
        assert err["code"] == code
    return err


def test_file_crud(client):
    data = jsonl([chat_line("a", "x")])
    f = _upload(client, data).json()
    assert f["object"] == "file" and f["bytes"] == len(data) and f["purpose"] == "batch" and f["filename"] == "in.jsonl"
    assert client.get(f"/v1/files/{f['id']}").json() == f
    assert client.get(f"/v1/files/{f['id']}/content").content == data
    listed = client.get("/v1/files").json()
    assert listed["object"] == "list" and [x["id"] for x in listed["data"]] == [f["id"]]
    assert client.delete(f"/v1/files/{f['id']}").json() == {"id": f["id"], "object": "file", "deleted": True}
    _error(client.get(f"/v1/files/{f['id']}"), 404, "file_not_found")
    _error(client.get(f"/v1/files/{f['id']}/content"), 404, "file_not_found")
    _error(client.delete(f"/v1/files/{f['id']}"), 404, "file_not_found")


def test_upload_errors(client):
    _error(_upload(client, b"a,b\n1,2\n", name="x.csv"), 400, "invalid_file")
    _error(_upload(client, b"\x89PNG\r\n\x1a\n\x00\x00"), 400, "invalid_file")
    _error(_upload(client, jsonl([chat_line("a", "x")]), purpose="fine-tune"), 400)
    # over the (4 KiB test) limit but under the multipart slack: caught while spooling
    _error(_upload(client, b'{"a": 1}\n' * 1000), 413, "file_too_large")
    _error(client.post("/v1/files", json={"purpose": "batch"}), 400)
    _error(client.post("/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"{}")}), 400)  # no file
    _error(client.post("/v1/files", files={"file": ("in.jsonl", jsonl([chat_line("a", "x")]))}), 400)  # no purpose


def test_60mb_upload_is_refused_with_413(tmp_path):
    app, jobs = _app(tmp_path, FakeExecutor())  # default 50 MB limit
    with TestClient(app) as c:
        resp = _upload(c, b"x" * (60 * 1024 * 1024))
        _error(resp, 413, "file_too_large")
    assert not list(jobs.store.files_dir.iterdir())


def test_batch_lifecycle(client):
    lines = [chat_line(f"c{i}", f"p{i}") for i in range(6)]
    f = _upload(client, jsonl(lines)).json()
    created = client.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                               "completion_window": "24h", "metadata": {"job": "t"}})
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["object"] == "batch" and batch["status"] == "validating" and batch["metadata"] == {"job": "t"}
    done = _wait(client, batch["id"])
    assert done["status"] == "completed" and done["request_counts"]["total"] == 6
    assert done["request_counts"]["completed"] == 6 and done["error_file_id"] is None
    out = [json.loads(x) for x in client.get(f"/v1/files/{done['output_file_id']}/content").text.splitlines()]
    assert [o["custom_id"] for o in out] == [line["custom_id"] for line in lines]
    assert out[0]["response"]["body"]["choices"][0]["message"]["content"] == answer_for(lines[0]["body"])
    assert client.get(f"/v1/files/{done['output_file_id']}").json()["purpose"] == "batch_output"
    page = client.get("/v1/batches", params={"limit": 1}).json()
    assert [b["id"] for b in page["data"]] == [batch["id"]] and page["has_more"] is False


def test_batch_create_errors(client):
    f = _upload(client, jsonl([chat_line("a", "x")])).json()
    body = {"input_file_id": f["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"}
    _error(client.post("/v1/batches", json={**body, "input_file_id": "file-nope"}), 404, "file_not_found")
    assert _error(client.post("/v1/batches", json={**body, "endpoint": "/v1/embeddings"}), 400)["param"] == "endpoint"
    assert _error(client.post("/v1/batches", json={**body, "completion_window": "1h"}), 400)["param"] == (
        "completion_window")
    _error(client.post("/v1/batches", json={"endpoint": "/v1/completions"}), 400)
    _error(client.get("/v1/batches/batch_nope"), 404, "batch_not_found")
    _error(client.post("/v1/batches/batch_nope/cancel"), 404, "batch_not_found")


def test_invalid_file_fails_batch_with_line_errors(client):
    data = jsonl([chat_line("a", "x"), chat_line("a", "y"), chat_line("b", "z", model="nope")])
    f = _upload(client, data).json()
    batch = client.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h"}).json()
    failed = _wait(client, batch["id"])
    assert failed["status"] == "failed" and failed["failed_at"]
    assert [(e["line"], e["code"]) for e in failed["errors"]["data"]] == [
        (2, "duplicate_custom_id"), (3, "model_not_found")]
    assert failed["output_file_id"] is None


def test_cancel_over_http(tmp_path):
    ex = FakeExecutor(delay=0.05)
    app, _ = _app(tmp_path, ex, max_in_flight=2)
    with TestClient(app) as c:
        f = _upload(c, jsonl([chat_line(f"c{i}", f"p{i}") for i in range(40)])).json()
        batch = c.post("/v1/batches", json={"input_file_id": f["id"], "endpoint": "/v1/chat/completions",
                                            "completion_window": "24h"}).json()
        _wait(c, batch["id"], statuses=("in_progress",))
        cancelling = c.post(f"/v1/batches/{batch['id']}/cancel").json()
        assert cancelling["status"] in ("cancelling", "cancelled")
        done = _wait(c, batch["id"])
        calls = sum(ex.calls.values())
        time.sleep(0.2)
        assert sum(ex.calls.values()) == calls  # the engine is no longer used
        counts = done["request_counts"]
        assert done["status"] == "cancelled" and counts["cancelled"] > 0
        assert counts["completed"] + counts["cancelled"] == 40
        assert c.post(f"/v1/batches/{batch['id']}/cancel").json()["status"] == "cancelled"


def test_deferred_completion_flow(tmp_path):
    ex = FakeExecutor()
    ex.gate = __import__("asyncio").Event()
    app, jobs = _app(tmp_path, ex)
    with TestClient(app) as c:
        rid = c.portal.call(lambda: _submit(jobs, {"model": "test-model", "deferred": True,
                                                   "messages": [{"role": "user", "content": "hi"}]}))
        assert c.get(f"/v1/chat/deferred-completion/{rid}").status_code == 202
        c.portal.call(_release, ex)
        deadline = time.monotonic() + 5
        while (resp := c.get(f"/v1/chat/deferred-completion/{rid}")).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert resp.status_code == 200 and resp.json()["object"] == "chat.completion"
        _error(c.get(f"/v1/chat/deferred-completion/{rid}"), 404)  # delivered once
        _error(c.get("/v1/chat/deferred-completion/unknown-id"), 404)
    assert ex.priorities == [0]


async def _submit(jobs: JobsService, body: dict) -> str:
    return jobs.deferred.submit(body)


async def _release(ex: FakeExecutor) -> None:
    ex.gate.set()


def test_deferred_pending_survives_restart(tmp_path):
    stuck = FakeExecutor()
    stuck.gate = __import__("asyncio").Event()  # never released: the 'process' dies first
    app, jobs = _app(tmp_path, stuck)
    with TestClient(app) as c:
        rid = c.portal.call(lambda: _submit(jobs, {"model": "test-model",
                                                   "messages": [{"role": "user", "content": "later"}]}))
    app2, _ = _app(tmp_path, FakeExecutor())
    with TestClient(app2) as c:
        deadline = time.monotonic() + 5
        while (resp := c.get(f"/v1/chat/deferred-completion/{rid}")).status_code == 202:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert resp.status_code == 200 and resp.json()["choices"][0]["message"]["content"]
