"""Whole-file batch validation: every malformed kind is reported with its line number."""

from __future__ import annotations

import json

import pytest

from grokd.server.jobs.validation import looks_like_jsonl, protocol_body_validator, validate_batch_file

from .jobs_helpers import chat_line, jsonl

CHAT = "/v1/chat/completions"


def _validate(data: bytes, **kw):
    return validate_batch_file(data, CHAT, protocol_body_validator, lambda m: m == "test-model", **kw)


def test_good_file_yields_lines_in_order():
    result = _validate(jsonl([chat_line("a", "x"), chat_line("b", "y")]) + b"\n\n")
    assert result.ok and [cid for cid, _ in result.lines] == ["a", "b"]
    assert result.lines[0][1]["messages"][0]["content"] == "x"


def _bad(line_obj_or_raw) -> str:
    return line_obj_or_raw if isinstance(line_obj_or_raw, str) else json.dumps(line_obj_or_raw)


@pytest.mark.parametrize(
    ("bad_line", "code", "param"),
    [
        ("{not json", "invalid_json_line", None),
        ("[1, 2]", "invalid_json_line", None),
        ({**chat_line("z", "q"), "custom_id": ""}, "invalid_custom_id", "custom_id"),
        (chat_line("a", "dup"), "duplicate_custom_id", "custom_id"),
        ({**chat_line("z", "q"), "url": "/v1/embeddings"}, "invalid_url", "url"),
        ({**chat_line("z", "q"), "method": "GET"}, "invalid_method", "method"),
        (chat_line("z", "q", model="no-such-model"), "model_not_found", "body.model"),
        ({**chat_line("z", "q"), "body": "text"}, "invalid_body", "body"),
        (chat_line("z", "q", temperature=5), "invalid_body", "body.temperature"),
        ({**chat_line("z", "q"), "body": {"model": "test-model", "messages": []}}, "invalid_body", "body.messages"),
        (chat_line("z", "q", stream=True), "invalid_body", "body.stream"),
        (chat_line("z", "q", functions=[]), "invalid_body", "body.functions"),
    ],
)
def test_each_malformed_kind_fails_the_whole_file(bad_line, code, param):
    data = jsonl([chat_line("a", "ok")]) + _bad(bad_line).encode() + b"\n" + jsonl([chat_line("c", "ok")])
    result = _validate(data)
    assert not result.ok and result.lines == []
    assert len(result.errors) == 1, result.errors
    err = result.errors[0]
    assert (err["code"], err["line"], err["param"]) == (code, 2, param)
    assert err["message"]


def test_completions_endpoint_and_empty_file():
    line = {"custom_id": "a", "method": "POST", "url": "/v1/completions",
            "body": {"model": "test-model", "prompt": [1, 2, 3], "max_tokens": 2}}
    assert validate_batch_file(jsonl([line]), "/v1/completions", protocol_body_validator).ok
    wrong = validate_batch_file(jsonl([line]), CHAT)
    assert wrong.errors[0]["code"] == "invalid_url"
    assert validate_batch_file(b"\n \n", CHAT).errors[0]["code"] == "empty_file"


def test_many_errors_are_all_reported_with_lines():
    data = b"".join([b"oops\n", jsonl([chat_line("a", "x")]), b"oops\n", jsonl([chat_line("a", "y")])])
    result = _validate(data)
    assert [(e["line"], e["code"]) for e in result.errors] == [
        (1, "invalid_json_line"), (3, "invalid_json_line"), (4, "duplicate_custom_id")]


def test_looks_like_jsonl():
    assert looks_like_jsonl(jsonl([chat_line("a", "x")])) is None
    assert looks_like_jsonl(b"oops\n" + jsonl([chat_line("a", "x")])) is None  # per-line issues: later
    assert looks_like_jsonl(b"\xff\xfe\x00binary") is not None
    assert looks_like_jsonl(b"a,b,c\n1,2,3\n") is not None
    assert looks_like_jsonl(b"") is not None
