"""The integration the chat route performs, as an executable reference: a stand-in chat endpoint
whose "model" echoes its prompt, so the test can see the documents went into the prompt."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict

from grokd.server.live import LiveContextError, LiveContextService, resolve
from grokd.server.live.cli import add_arguments, config_from_args

from .conftest import CharTokenizer


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class Message(_Lenient):
    role: str
    content: str


class ProtocolSearchParameters(_Lenient):  # the HTTP layer's own lenient model
    mode: Literal["off", "auto", "on"] = "auto"


class ChatRequest(BaseModel):
    messages: list[Message]
    search_parameters: ProtocolSearchParameters | None = None
    tools: list[dict[str, Any]] | None = None


def _chat_app(live: LiveContextService) -> FastAPI:
    app = FastAPI()
    tokenizer = CharTokenizer()

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> JSONResponse:
        try:
            params, _tools = resolve(req.search_parameters, req.tools)
        except ValueError as exc:
            return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
        messages: list[Any] = [m.model_dump() for m in req.messages]
        headers: dict[str, str] = {}
        live = None
        if params is not None:
            prompt_tokens = sum(len(tokenizer.encode(m["content"])) for m in messages)
            budget = live_service.token_budget(8192, prompt_tokens, 256)
            try:
                live = await live_service.augment(messages, params, tokenizer, budget)
            except ValueError as exc:
                return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error"}}, 400)
            except LiveContextError as exc:
                return JSONResponse(exc.body(), exc.status, headers=exc.headers)
            messages = live.inject(messages)
            headers.update(live.headers)
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        body: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": prompt}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": len(tokenizer.encode(prompt)), "completion_tokens": 1},
        }
        if live is not None:
            body.update(live.response_fields())
            body["usage"].update(live.usage_fields())
        return JSONResponse(body, headers=headers)

    live_service = live
    return app


def _x_api(request):
    created = (datetime.now(UTC) - timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {
        "data": [
            {
                "id": "42",
                "text": "Eclipse visible over Lisbon right now",
                "author_id": "1",
                "created_at": created,
                "public_metrics": {"like_count": 3, "impression_count": 10},
            }
        ],
        "includes": {"users": [{"id": "1", "username": "skywatch"}]},
        "meta": {"result_count": 1},
    }
    return 200, {"content-type": "application/json"}, json.dumps(body).encode()


def _service(stub, tmp_path, *extra: str) -> LiveContextService:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir")
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--state-dir",
            str(tmp_path),
            "--live-allow-host",
            stub.hostport,
            "--live-x-base-url",
            stub.base,
            *extra,
        ]
    )
    return LiveContextService(config_from_args(args, {"GROKD_X_BEARER_TOKEN": "t"}))


def test_chat_with_live_context(stub, tmp_path) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    client = TestClient(_chat_app(_service(stub, tmp_path)))
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "Is the eclipse visible in Lisbon today?"}],
            "search_parameters": {"mode": "on", "sources": [{"type": "x"}]},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    prompt = body["choices"][0]["message"]["content"]
    assert (
        prompt.startswith("system: Live search results") and "Eclipse visible over Lisbon right now" in prompt
    )
    assert body["citations"] == ["https://x.com/skywatch/status/42"]
    assert body["usage"]["num_sources_used"] == 1
    assert r.headers["x-grokd-live-context"] == "used"


def test_live_search_tool_spelling(stub, tmp_path) -> None:
    stub.routes["/2/tweets/search/recent"] = _x_api
    client = TestClient(_chat_app(_service(stub, tmp_path)))
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "latest eclipse posts"}],
            "tools": [{"type": "live_search", "sources": [{"type": "x"}]}],
        },
    )
    assert r.json()["citations"] == ["https://x.com/skywatch/status/42"]


def test_source_down_auto_is_200_degraded_and_on_is_502(stub, tmp_path) -> None:
    stub.routes["/2/tweets/search/recent"] = lambda r: (500, {}, b"boom")
    client = TestClient(_chat_app(_service(stub, tmp_path)))
    request = {
        "messages": [{"role": "user", "content": "eclipse news today"}],
        "search_parameters": {"mode": "auto", "sources": [{"type": "x"}]},
    }
    r = client.post("/v1/chat/completions", json=request)
    assert r.status_code == 200 and r.headers["x-grokd-live-context"] == "degraded"
    assert r.json()["usage"]["num_sources_used"] == 0
    assert "citations" not in r.json() and "Live search" not in r.json()["choices"][0]["message"]["content"]
    request["search_parameters"]["mode"] = "on"
    r = client.post("/v1/chat/completions", json=request)
    assert r.status_code == 502 and r.json()["error"]["code"] == "live_source_unavailable"
    assert "x:" in r.json()["error"]["message"]


def test_bad_parameters_are_400(stub, tmp_path) -> None:
    client = TestClient(_chat_app(_service(stub, tmp_path)))
    r = client.post(
        "/v1/chat/completions",
        json={
            "messages": [{"role": "user", "content": "hi"}],
            "search_parameters": {"mode": "on", "max_search_results": 99},
        },
    )
    assert r.status_code == 400 and "search_parameters.max_search_results" in r.json()["error"]["message"]
