"""``grokd serve`` on the tiny Grok-2 in its release layout (tests/data/grok2-tiny), as a real
subprocess on 127.0.0.1, float32 on the CPU: /v1/completions reproduces reference.json at every
prompt position and in its greedy tokens, for the token-id prompts and for the chat texts (which
the served tokenizer must turn into the reference's ids); /v1/chat/completions renders the
Grok-2 chat format, counts usage exactly, streams, calls tools and follows a JSON schema; bad
input is a 400 naming the problem; and ``grokd chat`` answers on the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from grokd.engine.tiktoken_tokenizer import TiktokenTokenizer
from tests.server.serving import REPO, ServerProcess, start_process

TOL = 2e-3
MODEL = "grok2-tiny"


@pytest.fixture(scope="module")
def server(grok2_tiny_dir: Path) -> ServerProcess:
    srv = start_process(["--model", str(grok2_tiny_dir), "--dtype", "float32", "--device", "cpu",
                         "--served-model-name", MODEL], timeout=240)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def tokenizer(grok2_tiny_dir: Path) -> TiktokenTokenizer:
    return TiktokenTokenizer(grok2_tiny_dir / "tokenizer.tok.json")


def post(server: ServerProcess, route: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + route, json={"model": MODEL, **body}, timeout=120)


def check_echo(lp: dict, case: dict) -> None:
    """Every prompt position's logprob (and top 5) against log_softmax of the reference logits,
    then the greedy tokens."""
    prompt = case["prompt"]
    assert [int(t.split(":")[1]) for t in lp["tokens"][:len(prompt)]] == prompt
    for i in range(1, len(prompt)):
        ref = torch.log_softmax(torch.tensor(case["logits"][i - 1], dtype=torch.float64), dim=-1)
        assert abs(lp["token_logprobs"][i] - ref[prompt[i]].item()) < TOL, i
        top = torch.topk(ref, 5)
        for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            assert abs(lp["top_logprobs"][i][f"token_id:{t}"] - v) < TOL
    assert [int(t.split(":")[1]) for t in lp["tokens"][len(prompt):]] == case["greedy"]


@pytest.mark.parametrize("kind", ["single", "chat"])
def test_completions_reproduce_reference(server: ServerProcess, grok2_tiny_reference: dict, kind: str) -> None:
    """Token-id prompts as ids; the chat cases as their text, which the server tokenizes."""
    for case in grok2_tiny_reference["fp32"][kind]:
        prompt = case["prompt"] if kind == "single" else case["text"]
        r = post(server, "/v1/completions", {
            "prompt": prompt, "max_tokens": len(case["greedy"]), "temperature": 0, "echo": True, "logprobs": 5,
            "return_tokens_as_token_ids": True, "ignore_eos": True})
        assert r.status_code == 200, r.text
        body = r.json()
        check_echo(body["choices"][0]["logprobs"], case)
        assert body["usage"]["prompt_tokens"] == len(case["prompt"])
        assert body["usage"]["completion_tokens"] == len(case["greedy"])


def test_chat_renders_grok2_format_and_counts_usage(server: ServerProcess, grok2_tiny_reference: dict,
                                                    tokenizer: TiktokenTokenizer) -> None:
    for case in grok2_tiny_reference["fp32"]["chat"]:
        steps = len(case["greedy"])
        r = post(server, "/v1/chat/completions", {"messages": case["messages"], "temperature": 0,
                                                  "max_tokens": steps, "logprobs": True})
        assert r.status_code == 200, r.text
        body = r.json()
        choice = body["choices"][0]
        assert choice["message"]["content"] == tokenizer.decode(case["greedy"])
        assert choice["finish_reason"] == "length"
        assert body["usage"]["prompt_tokens"] == len(case["prompt"])
        assert body["usage"]["completion_tokens"] == steps
        assert body["usage"]["total_tokens"] == len(case["prompt"]) + steps
        ref = torch.log_softmax(torch.tensor(case["logits"][-1], dtype=torch.float64), dim=-1)
        assert abs(choice["logprobs"]["content"][0]["logprob"] - ref[case["greedy"][0]].item()) < TOL


def test_chat_stream_matches_non_stream(server: ServerProcess, grok2_tiny_reference: dict,
                                        tokenizer: TiktokenTokenizer) -> None:
    case = grok2_tiny_reference["fp32"]["chat"][1]
    body = {"messages": case["messages"], "temperature": 0, "max_tokens": 8, "stream": True,
            "stream_options": {"include_usage": True}}
    deltas, usage = [], None
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={"model": MODEL, **body}, timeout=120) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: "):])
            for c in chunk["choices"]:
                deltas.append(c["delta"].get("content") or "")
            usage = chunk.get("usage") or usage
    assert "".join(deltas) == tokenizer.decode(case["greedy"])
    assert usage is not None and usage["prompt_tokens"] == len(case["prompt"]) and usage["completion_tokens"] == 8


def test_separator_ends_a_reply(server: ServerProcess, tokenizer: TiktokenTokenizer) -> None:
    """Forcing the separator (a logit bias) ends the reply with finish_reason stop, not in its text."""
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0,
                                              "max_tokens": 8, "logit_bias": {"1": 100}})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"] == ""
    assert r.json()["usage"]["completion_tokens"] == 1


def test_tool_call_and_json_schema(server: ServerProcess) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 8}}, "required": ["city"],
        "additionalProperties": False}}}]
    r = post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Weather in Paris?"}],
                                              "tools": tools, "tool_choice": "required", "temperature": 0,
                                              "max_tokens": 60})
    assert r.status_code == 200, r.text
    (call,) = r.json()["choices"][0]["message"]["tool_calls"][:1]
    assert call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str)
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
              "required": ["n"], "additionalProperties": False}
    r = post(server, "/v1/chat/completions", {
        "messages": [{"role": "user", "content": "A number?"}], "temperature": 0, "max_tokens": 30,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}})
    assert r.status_code == 200, r.text
    assert 0 <= json.loads(r.json()["choices"][0]["message"]["content"])["n"] <= 99


def test_bad_token_id_is_a_clear_400(server: ServerProcess) -> None:
    r = post(server, "/v1/completions", {"prompt": [5, 512], "max_tokens": 1})
    assert r.status_code == 400, r.text
    assert "512" in r.json()["error"]["message"]


def test_grokd_chat_cli_answers(grok2_tiny_dir: Path, grok2_tiny_reference: dict,
                                tokenizer: TiktokenTokenizer) -> None:
    """``grokd chat`` on the fixture: greedy, its reply is the reference's greedy continuation of
    the one-turn conversation."""
    case = grok2_tiny_reference["fp32"]["chat"][0]
    (message,) = case["messages"]
    proc = subprocess.run(
        [sys.executable, "-m", "grokd.server.cli", "chat", "--model", str(grok2_tiny_dir), "--temperature", "0",
         "--max-tokens", str(len(case["greedy"]))],
        input=message["content"] + "\n/exit\n", capture_output=True, text=True, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert tokenizer.decode(case["greedy"]).strip() in proc.stdout


def test_tp2_serve_reproduces_reference(grok2_tiny_dir: Path, grok2_tiny_reference: dict) -> None:
    """``--tensor-parallel-size 2`` (gloo, the second rank spawned by the server, each reading its
    slices of the rank files): the same logprobs and greedy tokens, requests batched together."""
    srv = start_process(["--model", str(grok2_tiny_dir), "--dtype", "float32", "--device", "cpu",
                         "--served-model-name", MODEL, "--tensor-parallel-size", "2"], timeout=240)
    try:
        cases = grok2_tiny_reference["fp32"]["single"] + grok2_tiny_reference["fp32"]["chat"]
        bodies = [{"prompt": c["prompt"], "max_tokens": len(c["greedy"]), "temperature": 0, "echo": True,
                   "logprobs": 5, "return_tokens_as_token_ids": True, "ignore_eos": True} for c in cases]
        with ThreadPoolExecutor(len(bodies)) as pool:
            results = list(pool.map(lambda b: post(srv, "/v1/completions", b), bodies))
        for case, r in zip(cases, results, strict=True):
            assert r.status_code == 200, r.text
            check_echo(r.json()["choices"][0]["logprobs"], case)
    finally:
        srv.stop()
