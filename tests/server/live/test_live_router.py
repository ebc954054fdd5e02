"""POST /v1/live/documents on a FastAPI app that mounts only the live router."""

from __future__ import annotations

import json

import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from fastapi.testclient import TestClient

from grokd.server.live import LiveConfig, LiveContextService, build_router
from grokd.server.live.base import SourceQuery


def _client(tmp_path, **kwargs) -> tuple[TestClient, LiveContextService]:
    service = LiveContextService(LiveConfig(state_dir=tmp_path))
    app = FastAPI()
    app.include_router(build_router(service, **kwargs))
    return TestClient(app), service


DOC = {
    "url": "https://intra.example/1",
    "title": "Outage",
    "text": "Payment outage resolved",
    "author": "@status",
}


def test_jsonl_ingest_then_search(tmp_path) -> None:
    client, service = _client(tmp_path)
    body = json.dumps(DOC) + "\n\n" + json.dumps({"url": "https://intra.example/2", "text": "second"}) + "\n"
    r = client.post("/v1/live/documents", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 200
    assert r.json() == {
        "object": "live.documents.ingest",
        "received": 2,
        "created": 2,
        "updated": 0,
        "total": 2,
    }
    assert service.local.search_sync(SourceQuery(terms=("outage",)))[0].url == DOC["url"]


def test_json_array_and_documents_object(tmp_path) -> None:
    client, _ = _client(tmp_path)
    assert client.post("/v1/live/documents", json=[DOC]).json()["created"] == 1
    assert client.post("/v1/live/documents", json={"documents": [DOC]}).json()["updated"] == 1


def test_bad_lines_are_a_400_naming_them_and_nothing_is_stored(tmp_path) -> None:
    client, service = _client(tmp_path)
    body = "\n".join([json.dumps(DOC), json.dumps({"url": "nope", "text": "x"}), "{oops"])
    r = client.post("/v1/live/documents", content=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_value"
    assert (
        "line 2: url must be an absolute http(s) URL" in error["message"]
        and "line 3: invalid JSON" in error["message"]
    )
    assert service.local.search_sync(SourceQuery(max_results=5)) == []


def test_bad_array_item_names_index(tmp_path) -> None:
    client, _ = _client(tmp_path)
    r = client.post("/v1/live/documents", json=[DOC, {"url": "https://a.example"}])
    assert r.status_code == 400 and "item 1: text must be a non-empty string" in r.json()["error"]["message"]


@pytest.mark.parametrize("body", [b"", b"\n\n", b"\xff\xfe", b"[not json"])
def test_empty_or_garbage(tmp_path, body: bytes) -> None:
    client, _ = _client(tmp_path)
    assert client.post("/v1/live/documents", content=body).status_code == 400


def test_body_limit(tmp_path) -> None:
    client, _ = _client(tmp_path, max_body_bytes=100)
    assert client.post("/v1/live/documents", content=json.dumps([DOC] * 5)).status_code == 413


def test_disabled_without_state_dir() -> None:
    app = FastAPI()
    app.include_router(build_router(LiveContextService(LiveConfig())))
    r = TestClient(app).post("/v1/live/documents", json=[DOC])
    assert r.status_code == 501 and r.json()["error"]["code"] == "live_local_disabled"
    assert r.headers["x-should-retry"] == "false"  # a configuration: clients must not retry it


def test_auth_dependency_is_applied(tmp_path) -> None:
    def require_key(authorization: str | None = Header(None)) -> None:
        if authorization != "Bearer k":
            raise HTTPException(401)

    client, _ = _client(tmp_path, dependencies=[Depends(require_key)])
    assert client.post("/v1/live/documents", json=[DOC]).status_code == 401
    assert (
        client.post("/v1/live/documents", json=[DOC], headers={"authorization": "Bearer k"}).status_code
        == 200
    )
