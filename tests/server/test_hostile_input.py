"""Hostile bodies against a real server (the default model on 127.0.0.1): each gets a 400 naming
the field, in bounded time, and the server keeps answering. Plus the checks behind them, and
hostile lines in an uploaded batch file. (Slow and idle connections: test_http_limits.)"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from grokd.engine.sampling_params import MAX_BAD_WORDS, MAX_LOGIT_BIAS, MAX_STOP_TOKEN_IDS
from grokd.engine.structured.validation import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_OBJECTS,
    validate_json_schema,
    validate_tools,
)
from grokd.server.config import ServerConfig
from grokd.server.unicode_check import invalid_text_path, lone_surrogate_path, utf8_error
from tests.server.jobs.jobs_helpers import chat_line, jsonl
from tests.server.serving import LiveServer, start_server

BOUND_S = 10.0  # every hostile request is answered within this (a loaded 2-core box)


@pytest.fixture(scope="module")
def server(smollm2_gguf) -> LiveServer:
    live = start_server(ServerConfig(dtype="float32", max_model_len=512))
    yield live
    live.stop()


MODEL = "smollm2-135m-instruct"


def _chat(server: LiveServer, raw: str | bytes) -> httpx.Response:
    return httpx.post(server.base_url + "/chat/completions", content=raw.encode() if isinstance(raw, str) else raw,
                      headers={"Content-Type": "application/json"}, timeout=60)


def _rejected(server: LiveServer, raw: str | bytes, param: str | None, *words: str) -> dict:
    """Assert ``raw`` gets a 400 naming ``param`` (and saying ``words``) within BOUND_S."""
    t0 = time.monotonic()
    r = _chat(server, raw)
    assert time.monotonic() - t0 < BOUND_S
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param, err
    for word in words:
        assert word in err["message"], err
    return err


def _still_serving(server: LiveServer) -> None:
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200
    assert _chat(server, json.dumps(_body())).status_code == 200


def _nested_schema(levels: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def _body(**extra) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
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


def test_invalid_text_path_finds_nul_but_not_its_spelling() -> None:
    found = invalid_text_path({"messages": [{"content": "a\x00"}]})
    assert found is not None and found[0] == "messages[0].content" and "NUL" in found[1]
    assert invalid_text_path({"content": "a literal \\u0000"}) is None
    assert utf8_error(b'{"a": "\xed\xa0\x80"}') == "the body is not valid UTF-8 (byte 7: invalid continuation byte)"
    assert utf8_error("é".encode()) is None


def test_schema_size_bounds() -> None:
    with pytest.raises(ValueError, match="too large"):
        validate_json_schema({"type": "string", "enum": [str(i) for i in range(30_000)]}, "s")
    with pytest.raises(ValueError, match=r"^s: nested too deeply"):
        validate_json_schema(_nested_schema(10_000), "s")
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(MAX_SCHEMA_OBJECTS)}}
    with pytest.raises(ValueError, match=f"more than {MAX_SCHEMA_OBJECTS} JSON objects"):
        validate_json_schema(wide, "s")
    half = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(MAX_SCHEMA_OBJECTS // 2)}}
    validate_tools([{"type": "function", "function": {"name": "f", "parameters": half}}])  # one fits
    with pytest.raises(ValueError, match=r"^tools: too large"):  # two together do not
        validate_tools([{"type": "function", "function": {"name": n, "parameters": half}} for n in "fg"])


def _deep(levels: int) -> str:
    return "[" * levels + "1" + "]" * levels


@pytest.mark.parametrize("where", ["body", "tool", "schema"])
def test_json_nested_10000_deep_is_a_400(server: LiveServer, where: str) -> None:
    deep = '{"items": ' * 10_000 + "{}" + "}" * 10_000
    raw = {
        "body": '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": ' + _deep(10_000) + "}",
        "tool": '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", '
                '"function": {"name": "f", "parameters": {"type": "object", "properties": {"a": ' + deep + "}}}}]}",
        "schema": '{"model": "m", "messages": [{"role": "user", "content": "hi"}], "response_format": '
                  '{"type": "json_schema", "json_schema": {"name": "d", "schema": ' + deep + "}}}",
    }[where]
    assert _rejected(server, raw, None, "nested too deeply")["code"] == "invalid_json"
    _still_serving(server)


@pytest.mark.parametrize(("extra", "param", "words"), [
    ({"n": 10**9}, "n", ["128"]),
    ({"max_tokens": 10**30}, "messages", ["maximum context length"]),
    ({"logit_bias": {str(i): 1 for i in range(100_000)}}, "logit_bias", [f"at most {MAX_LOGIT_BIAS}", "100000"]),
    ({"stop": [f"s{i}" for i in range(100_000)]}, "stop", ["at most 4"]),
    ({"bad_words": [f"w{i}" for i in range(100_000)]}, "bad_words", [f"at most {MAX_BAD_WORDS}"]),
    ({"stop_token_ids": list(range(100_000))}, "stop_token_ids", [f"at most {MAX_STOP_TOKEN_IDS}"]),
])
def test_absurd_counts_and_lists_are_a_400_naming_the_field(server: LiveServer, extra: dict, param: str,
                                                            words: list[str]) -> None:
    _rejected(server, json.dumps(_body(**extra)), param, *words)


def test_lists_at_their_limits_are_served(server: LiveServer) -> None:
    body = _body(logit_bias={str(i): -1 for i in range(MAX_LOGIT_BIAS)},
                 bad_words=[f"w{i}" for i in range(MAX_BAD_WORDS)], stop_token_ids=list(range(MAX_STOP_TOKEN_IDS)))
    assert _chat(server, json.dumps(body)).status_code == 200


def _format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


def test_grammar_explosions_are_a_400_in_bounded_time(server: LiveServer) -> None:
    wide = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(5_000)}}
    _rejected(server, json.dumps(_body(response_format=_format(wide))), "response_format.json_schema.schema",
              f"more than {MAX_SCHEMA_OBJECTS} JSON objects")
    enum = {"enum": [str(i) for i in range(100_000)]}
    _rejected(server, json.dumps(_body(response_format=_format(enum))), "response_format.json_schema.schema",
              "too large")
    branches = {"anyOf": [{"type": "object", "properties": {f"k{i}": {"type": "string"}}} for i in range(5_000)]}
    _rejected(server, json.dumps(_body(response_format=_format(branches))), "response_format.json_schema.schema",
              "too large")
    # many tools, each within the bounds, share one budget
    params = {"type": "object", "properties": {f"p{i}": {"type": "integer"} for i in range(100)}}
    tools = [{"type": "function", "function": {"name": f"f{i}", "parameters": params}} for i in range(100)]
    _rejected(server, json.dumps(_body(tools=tools, tool_choice="required")), "tools", "too large")
    nested_repeat = {"type": "string", "pattern": "a{1000}{1000}"}
    _rejected(server, json.dumps(_body(response_format=_format(nested_repeat))),
              "response_format.json_schema.schema.pattern", "regex")
    _still_serving(server)


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "(a+)+$"},  # catastrophic backtracking for a backtracking engine
    {"type": "string", "pattern": "^(a|b){1000}(c|d){1000}$"},
    {"type": "string", "minLength": 10**9},
    {"type": "array", "items": {"type": "integer"}, "minItems": 10**9},
], ids=["redos", "counted-repeats", "min-length", "min-items"])
def test_pathological_but_valid_schemas_are_served_in_bounded_time(server: LiveServer, schema: dict) -> None:
    """llguidance compiles regexes to lazy automata (no backtracking) and counts lengths without
    unrolling them, so these compile in milliseconds and constrain the reply as asked."""
    t0 = time.monotonic()
    r = _chat(server, json.dumps(_body(response_format=_format(schema))))
    assert time.monotonic() - t0 < 30 and r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"]
    assert content.startswith("\"" if schema["type"] == "string" else "[")


@pytest.mark.parametrize(("raw", "param", "words"), [
    (b'{"model": "m", "messages": [{"role": "user", "content": "a\xff\xfeb"}]}', None, ["not valid UTF-8", "byte 58"]),
    # UTF-8-encoded surrogates: Python's json would decode them to a lone surrogate
    (b'{"model": "m", "messages": [{"role": "user", "content": "a\xed\xa0\x80b"}]}', None, ["not valid UTF-8"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "a\\u0000b"}]}', "messages[0].content", ["NUL"]),
    (b'{"model": "m", "messages": [{"role": "user", "content": "a\x00b"}]}', None, ["Invalid JSON"]),
])
def test_invalid_utf8_and_nul_are_a_400(server: LiveServer, raw: bytes, param: str | None, words: list[str]) -> None:
    _rejected(server, raw, param, *words)
    _still_serving(server)


def _upload(server: LiveServer, data: bytes) -> httpx.Response:
    return httpx.post(server.base_url + "/files", files={"file": ("in.jsonl", data, "application/jsonl")},
                      data={"purpose": "batch"}, timeout=30)


def _batch(server: LiveServer, data: bytes) -> dict:
    f = _upload(server, data)
    assert f.status_code == 200, f.text
    r = httpx.post(server.base_url + "/batches", timeout=30, json={
        "input_file_id": f.json()["id"], "endpoint": "/v1/chat/completions", "completion_window": "24h"})
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        batch = httpx.get(server.base_url + f"/batches/{r.json()['id']}", timeout=30).json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch stuck in {batch['status']}")


def _lines(server: LiveServer, file_id: str) -> list[dict]:
    text = httpx.get(server.base_url + f"/files/{file_id}/content", timeout=30).text
    return [json.loads(line) for line in text.splitlines()]


def test_a_batch_line_that_is_not_text_fails_alone(server: LiveServer) -> None:
    good = [chat_line(f"ok{i}", "hi", model=MODEL, max_tokens=2) for i in range(2)]
    raw = jsonl([good[0]]) + (
        b'{"custom_id": "surrogate", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "'
        + MODEL.encode() + b'", "messages": [{"role": "user", "content": "\\ud800"}], "max_tokens": 2}}\n'
        b'{"custom_id": "nul", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "'
        + MODEL.encode() + b'", "messages": [{"role": "user", "content": "a\\u0000"}], "max_tokens": 2}}\n'
    ) + jsonl([good[1]])
    batch = _batch(server, raw)
    assert batch["status"] == "completed", batch
    counts = batch["request_counts"]
    assert (counts["total"], counts["completed"], counts["failed"]) == (4, 2, 2)
    assert [o["custom_id"] for o in _lines(server, batch["output_file_id"])] == ["ok0", "ok1"]
    errors = {e["custom_id"]: e["response"] for e in _lines(server, batch["error_file_id"])}
    assert errors["surrogate"]["status_code"] == 400 and "surrogate" in errors["surrogate"]["body"]["error"]["message"]
    assert errors["nul"]["status_code"] == 400 and errors["nul"]["body"]["error"]["param"] == "messages[0].content"


def test_a_batch_file_that_is_not_utf8_or_json_is_refused_with_the_line(server: LiveServer) -> None:
    r = _upload(server, jsonl([chat_line("a", "hi", model=MODEL)]) + b'{"custom_id": "b\xff"}\n')
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]["message"], r.text
    good = chat_line("a", "hi", model=MODEL, max_tokens=2)
    raw = jsonl([good]) + b'{"custom_id": "\\udc00", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' + (
        b'{"custom_id": "c", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m\x00"}}\n')
    batch = _batch(server, raw)
    assert batch["status"] == "failed"
    found = {(e["line"], e["code"]) for e in batch["errors"]["data"]}
    assert {(2, "invalid_custom_id"), (3, "invalid_json_line")} <= found and not any(line == 1 for line, _ in found)
    _still_serving(server)
