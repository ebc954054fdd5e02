"""Hostile bodies against a real server (the default model on 127.0.0.1): each gets a 400 naming
the field, in bounded time, and the server keeps answering. Plus the checks behind them."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from grokd.engine.structured.validation import MAX_SCHEMA_DEPTH, validate_json_schema
from grokd.server.config import ServerConfig
from grokd.server.unicode_check import lone_surrogate_path
from tests.server.serving import LiveServer, start_server


@pytest.fixture(scope="module")
def server(smollm2_gguf) -> LiveServer:
    live = start_server(ServerConfig(dtype="float32", max_model_len=512))
    yield live
    live.stop()


def _chat(server: LiveServer, raw: str) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", content=raw.encode(),
                      headers={"Content-Type": "application/json"}, timeout=60)


def _nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _body(**extra) -> dict:
    return {"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            **extra}


@pytest.mark.parametrize(("raw", "param"), [
    ('{"model": "m", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}',
     "messages[0].content"),
    ('{"model": "m", "messages": [{"role": "user", "content": "ok"}], "stop": ["a", "\\udc00x"]}', "stop[1]"),
    ('{"model": "m", "messages": [{"role": "user", "content": "ok"}], "user": "\\ud83d"}', "user"),
])
def test_lone_surrogates_are_a_400_naming_the_field(server: LiveServer, raw: str, param: str) -> None:
    r = _chat(server, raw)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and "lone UTF-16 surrogate" in err["message"]


def test_a_paired_surrogate_and_an_escaped_backslash_are_text(server: LiveServer) -> None:
    body = json.dumps(_body(messages=[{"role": "user", "content": "smile \ud83d\ude00 and \\ud800 literally"}]))
    assert "\\ud83d\\ude00" in body and "\\\\ud800" in body  # the escapes as a client sends them
    r = _chat(server, body)
    assert r.status_code == 200, r.text


def test_a_schema_nested_200_deep_is_a_400_in_bounded_time(server: LiveServer) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "deep", "schema": _nested_schema(200)}}
    t0 = time.monotonic()
    r = _chat(server, json.dumps(_body(response_format=fmt)))
    assert time.monotonic() - t0 < 10
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format.json_schema.schema"
    assert "nested too deeply" in r.json()["error"]["message"]
    tool = {"type": "function", "function": {"name": "f", "parameters": _nested_schema(200)}}
    r = _chat(server, json.dumps(_body(tools=[tool])))
    assert r.status_code == 400 and "nested too deeply" in r.json()["error"]["message"], r.text
    assert _chat(server, json.dumps(_body())).status_code == 200  # still serving


def test_a_schema_within_the_bound_is_served(server: LiveServer) -> None:
    levels = MAX_SCHEMA_DEPTH // 2 - 1  # an object schema takes two JSON levels (itself, properties)
    fmt = {"type": "json_schema", "json_schema": {"name": "ok", "schema": _nested_schema(levels)}}
    r = _chat(server, json.dumps(_body(response_format=fmt)))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"].startswith("{\"a")  # max_tokens 2


def test_lone_surrogate_path_finds_keys_and_nested_values() -> None:
    assert lone_surrogate_path({"a": ["fine", {"b": "x\udfff"}]}) == "a[1].b"
    assert lone_surrogate_path({"a": {"\ud800": 1}}) == "a (a key)"
    assert lone_surrogate_path({"a": ["\U0001f600", "plain"]}) is None


def test_schema_size_bounds() -> None:
    with pytest.raises(ValueError, match="too large"):
        validate_json_schema({"type": "string", "enum": [str(i) for i in range(30_000)]}, "s")
    with pytest.raises(ValueError, match=r"^s: nested too deeply"):
        validate_json_schema(_nested_schema(10_000), "s")
