"""The HTTP API over the golden grok1-tiny fixture (float32, no tokenizer): a real uvicorn server
on 127.0.0.1 and the real openai-python client. Covers /v1/completions against reference.json,
models, auth, metrics and every error class of API.md's table except 503 (see
test_backpressure.py, which drains a real server with SIGTERM)."""

from __future__ import annotations

import asyncio
import json
import math

import httpx
import openai
import pytest
import torch
from openai import OpenAI

from grokd.server.config import ServerConfig
from tests.server.serving import LiveServer, start_server

GOOD = "sk-good-key-0123456789"
BLOCKED = "sk-blocked-key-0123456"
OTHER_MODEL = "sk-other-model-key-0123"
RPM2 = "sk-rpm-limited-key-0123"
MODELS_ONLY = "sk-models-only-key-0123"
MODEL = "grok1-tiny"


def _boom_route(app) -> None:
    async def boom() -> None:
        raise RuntimeError("deliberate bug for the 500 test")

    app.add_api_route("/v1/test-only/boom", boom, methods=["GET"])


@pytest.fixture(scope="module")
def server(grok1_tiny_dir) -> LiveServer:
    config = ServerConfig(
        model=str(grok1_tiny_dir),
        dtype="float32",
        api_key=[GOOD, f"{BLOCKED} blocked=true", f"{OTHER_MODEL} models=some-other-model", f"{RPM2} rpm=2",
                 f"{MODELS_ONLY} endpoints=/v1/models"],
        max_body_bytes=256 * 1024,
        max_upload_bytes=512 * 1024,
        alias=["tiny"],
        model_version="test1",
    )
    live = start_server(config, setup=_boom_route)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def client(server: LiveServer) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=GOOD, max_retries=0)


def _log_softmax(row: list[float]) -> torch.Tensor:
    return torch.log_softmax(torch.tensor(row, dtype=torch.float64), dim=-1)


# ---------------------------------------------------------------- reference reproduction


def test_reference_reproduction_through_completions(client: OpenAI, grok1_tiny_reference: dict) -> None:
    """Prompt logprobs equal log_softmax of the reference fp32 logits; greedy tokens identical."""
    steps = grok1_tiny_reference["greedy_steps"]
    for case in grok1_tiny_reference["fp32"]["single"]:
        prompt, logits, greedy = case["prompt"], case["logits"], case["greedy"]
        resp = client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=steps, temperature=0, echo=True, logprobs=5,
            extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
        )
        choice = resp.choices[0]
        lp = choice.logprobs
        assert lp is not None and lp.tokens is not None and lp.token_logprobs is not None
        assert lp.tokens[: len(prompt)] == [f"token_id:{t}" for t in prompt]
        assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
        for i in range(1, len(prompt)):
            ref = _log_softmax(logits[i - 1])
            assert abs(lp.token_logprobs[i] - ref[prompt[i]].item()) < 2e-3, i
            top = torch.topk(ref, 5)
            got = lp.top_logprobs[i]
            for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                assert abs(got[f"token_id:{t}"] - v) < 2e-3
        generated = [int(t.split(":")[1]) for t in lp.tokens[len(prompt):]]
        assert generated == greedy
        assert generated[0] == int(torch.tensor(logits[-1]).argmax())
        assert choice.finish_reason == "length"
        assert resp.usage.prompt_tokens == len(prompt) and resp.usage.completion_tokens == steps
        assert resp.model == MODEL and resp.system_fingerprint.startswith("fp_")
        assert len(resp.system_fingerprint) == 13


def test_completions_token_id_batch_with_n(client: OpenAI, grok1_tiny_reference: dict) -> None:
    prompts = [c["prompt"] for c in grok1_tiny_reference["fp32"]["single"][:2]]
    resp = client.completions.create(model="tiny", prompt=prompts, max_tokens=3, n=2, seed=7, logprobs=0,
                                     extra_body={"return_tokens_as_token_ids": True})
    assert sorted(c.index for c in resp.choices) == [0, 1, 2, 3]
    assert resp.model == MODEL
    assert resp.usage.prompt_tokens == sum(len(p) for p in prompts)
    assert resp.usage.completion_tokens == 12
    for c in resp.choices:
        assert len(c.logprobs.tokens) == 3 and all(len(d) == 1 for d in c.logprobs.top_logprobs)


def test_completions_seed_is_reproducible(client: OpenAI) -> None:
    def run() -> list[str]:
        r = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=6, temperature=1.0, seed=1234,
                                      logprobs=0, extra_body={"return_tokens_as_token_ids": True})
        return r.choices[0].logprobs.tokens

    assert run() == run()


def test_completions_stream_echo_include_usage(client: OpenAI, grok1_tiny_reference: dict) -> None:
    case = grok1_tiny_reference["fp32"]["single"][1]
    stream = client.completions.create(
        model=MODEL, prompt=case["prompt"], max_tokens=4, temperature=0, echo=True, logprobs=1, stream=True,
        stream_options={"include_usage": True}, extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True},
    )
    chunks = list(stream)
    ids = {c.id for c in chunks}
    assert len(ids) == 1
    tokens = [t for c in chunks if c.choices for t in (c.choices[0].logprobs.tokens or [])]
    assert tokens == [f"token_id:{t}" for t in case["prompt"] + case["greedy"][:4]]
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert chunks[-1].usage.prompt_tokens == len(case["prompt"])


def test_completions_stream_several_prompts(client: OpenAI, grok1_tiny_reference: dict) -> None:
    cases = grok1_tiny_reference["fp32"]["single"]
    stream = client.completions.create(
        model=MODEL, prompt=[c["prompt"] for c in cases], max_tokens=3, temperature=0, logprobs=0, stream=True,
        extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True})
    tokens: dict[int, list[str]] = {}
    for chunk in stream:
        for c in chunk.choices:
            tokens.setdefault(c.index, []).extend(c.logprobs.tokens if c.logprobs else [])
    assert tokens == {i: [f"token_id:{t}" for t in c["greedy"][:3]] for i, c in enumerate(cases)}


def test_completions_stop_token_ids_and_max_tokens_zero_echo(client: OpenAI, grok1_tiny_reference: dict) -> None:
    case = grok1_tiny_reference["fp32"]["single"][0]
    r = client.completions.create(model=MODEL, prompt=case["prompt"], max_tokens=8, temperature=0,
                                  extra_body={"stop_token_ids": [case["greedy"][1]], "ignore_eos": True})
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 2
    r = client.completions.create(model=MODEL, prompt=case["prompt"], max_tokens=0, echo=True, logprobs=0,
                                  extra_body={"return_tokens_as_token_ids": True})
    assert r.usage.completion_tokens == 0 and len(r.choices[0].logprobs.tokens) == len(case["prompt"])


# ---------------------------------------------------------------- models, auth, misc


def test_models_and_language_models(client: OpenAI, server: LiveServer) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    for name in (MODEL, f"{MODEL}-latest", f"{MODEL}-test1", "tiny"):
        assert client.models.retrieve(name).id == MODEL
    lm = client.get("/language-models", cast_to=object)
    (entry,) = lm["models"]
    assert entry["id"] == MODEL and entry["version"] == "test1"
    assert set(entry["aliases"]) >= {f"{MODEL}-latest", f"{MODEL}-test1", "tiny"}
    assert entry["input_modalities"] == ["text"] and entry["fingerprint"].startswith("fp_")
    assert client.get(f"/language-models/{MODEL}-latest", cast_to=object)["id"] == MODEL
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert exc.value.code == "model_not_found"


def test_the_app_is_wired_by_types(server: LiveServer) -> None:
    """The engine is what the server's EngineClient protocol describes (KV cache size included),
    the feature services sit in typed state fields, and create_app mounts every router."""
    from grokd.server.jobs import JobsService
    from grokd.server.live import LiveContextService
    from grokd.server.state import EngineClient

    state = server.state
    assert isinstance(state.engine, EngineClient)
    kv = state.engine.kv_cache
    assert kv.num_blocks == state.engine.stats().kv_blocks_total > 0
    assert kv.num_tokens == kv.num_blocks * kv.block_size and kv.num_bytes == kv.num_blocks * kv.bytes_per_block > 0
    assert kv.dtype == "float32"
    assert isinstance(state.jobs, JobsService) and state.jobs.config.state_dir == state.state_dir
    assert isinstance(state.live, LiveContextService)
    paths = set(server.app.openapi()["paths"])
    assert {"/v1/chat/completions", "/v1/files", "/v1/batches", "/v1/batches/{batch_id}/cancel",
            "/v1/chat/deferred-completion/{request_id}", "/v1/live/documents"} <= paths


def test_api_key_endpoint_is_redacted(client: OpenAI) -> None:
    info = client.get("/api-key", cast_to=object)
    assert GOOD not in str(info)
    assert info["redacted_api_key"].startswith("sk-g") and info["api_key_blocked"] is False
    assert "acls" in info and info["api_key_id"]


def test_health_needs_no_key_and_request_ids(server: LiveServer) -> None:
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.headers["x-request-id"]
    r = httpx.get(server.url + "/ready")
    assert r.status_code == 200
    r = httpx.get(server.url + "/v1/models")
    assert r.status_code == 401 and r.headers["x-request-id"]
    r = httpx.get(server.url + "/v1/models", headers={"Authorization": f"Bearer {GOOD}", "x-request-id": "mine-1"})
    assert r.headers["x-request-id"] == "mine-1"


def test_metrics(client: OpenAI, server: LiveServer) -> None:
    client.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=2)
    text = httpx.get(server.url + "/metrics").text
    for name in ("grokd_http_requests_total", "grokd_prompt_tokens_total", "grokd_generation_tokens_total",
                 "grokd_time_to_first_token_seconds_bucket", "grokd_inter_token_latency_seconds_bucket",
                 "grokd_num_requests_waiting", "grokd_num_requests_running", "grokd_kv_cache_usage_ratio",
                 "grokd_kv_blocks_total", "grokd_prefix_cache_hit_rate"):
        assert name in text, name
    assert 'route="/v1/completions"' in text


# ---------------------------------------------------------------- error table


def _api_error(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert exc.response.headers["x-request-id"]
    return body["error"]


def test_400_invalid_value_names_param(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1, 2], temperature=3.0)
    assert exc.value.type == "invalid_request_error" and exc.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1, 2], extra_body={"top_k": -5})
    assert exc.value.param == "top_k"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1, 2], stop=["a", "b", "c", "d", "e"])
    assert exc.value.param == "stop"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1, 2], suffix="x")
    assert exc.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1, 2], extra_body={"guided_json": {"type": "object"}})
    assert exc.value.param == "guided_json"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt="text needs a tokenizer")
    assert exc.value.code == "no_tokenizer"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[5000])
    assert exc.value.param == "prompt"
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert exc.value.code == "no_tokenizer"


def test_400_context_length_gives_both_numbers(client: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[3] * 200, max_tokens=100)
    err = _api_error(exc.value)
    assert exc.value.code == "context_length_exceeded" and exc.value.param == "prompt"
    assert "256" in err["message"] and "200" in err["message"] and "300" in err["message"]
    # default max_tokens is the remaining room
    r = client.completions.create(model=MODEL, prompt=[3] * 250, extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 6


def test_400_bad_json_and_missing_field(server: LiveServer) -> None:
    h = {"Authorization": f"Bearer {GOOD}", "Content-Type": "application/json"}
    r = httpx.post(server.base_url + "/completions", content=b"{not json", headers=h)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = httpx.post(server.base_url + "/completions", json={"model": MODEL}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(server.base_url + "/completions", json={"model": MODEL, "prompt": [1], "n": "x"}, headers=h)
    assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_401_403(server: LiveServer) -> None:
    with pytest.raises(openai.AuthenticationError) as exc:
        OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0).models.list()
    assert exc.value.code == "invalid_api_key" and exc.value.type == "authentication_error"
    with pytest.raises(openai.PermissionDeniedError) as exc:
        OpenAI(base_url=server.base_url, api_key=BLOCKED, max_retries=0).models.list()
    assert exc.value.type == "permission_error"
    other = OpenAI(base_url=server.base_url, api_key=OTHER_MODEL, max_retries=0)
    with pytest.raises(openai.PermissionDeniedError) as exc:
        other.completions.create(model=MODEL, prompt=[1, 2], max_tokens=1)
    assert exc.value.param == "model"
    assert other.models.list().data == []
    models_only = OpenAI(base_url=server.base_url, api_key=MODELS_ONLY, max_retries=0)
    assert models_only.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.PermissionDeniedError) as exc:
        models_only.completions.create(model=MODEL, prompt=[1, 2], max_tokens=1)
    assert exc.value.code == "endpoint_not_allowed"


def test_file_uploads_have_the_upload_limit_not_the_body_limit(server: LiveServer) -> None:
    """/v1/files: --max-upload-bytes (512 KiB here) + multipart framing, not --max-body-bytes (256 KiB)."""
    auth = {"Authorization": f"Bearer {GOOD}"}
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {"pad": "' + b"x" * 1000 + b'"}}\n'

    def upload(data: bytes) -> httpx.Response:
        return httpx.post(server.base_url + "/files", headers=auth, data={"purpose": "batch"},
                          files={"file": ("in.jsonl", data, "application/jsonl")})

    ok = upload(line * 400)  # ~400 KB: over the body limit, under the upload limit
    assert ok.status_code == 200, ok.text
    assert ok.json()["bytes"] == len(line) * 400
    r = upload(line * 600)  # ~600 KB: over the upload limit, refused from its Content-Length
    assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"

    # No Content-Length (chunked): the middleware must cut the stream at the upload limit, not
    # let the multipart parser spool all of it first. Driven through the ASGI app to count what
    # the server pulled.
    boundary = "grokdtestboundary"
    chunks = [(f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n"
               f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"in.jsonl\"\r\n"
               "Content-Type: application/jsonl\r\n\r\n").encode()]
    chunks += [line] * 1000 + [f"\r\n--{boundary}--\r\n".encode()]  # ~1 MB
    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled == len(chunks):
            return {"type": "http.disconnect"}
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/files", "raw_path": b"/v1/files", "root_path": "", "query_string": b"",
        "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 5555),
        "headers": [(b"authorization", f"Bearer {GOOD}".encode()),
                    (b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
    }
    asyncio.run(server.app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"])["error"]["code"] == "file_too_large"
    assert pulled * len(line) < 700 * 1024  # stopped near 512 KiB + 64 KiB, not at the end


def test_404_405_413_415(client: OpenAI, server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as exc:
        client.completions.create(model="grok-9000", prompt=[1])
    assert exc.value.code == "model_not_found" and exc.value.type == "not_found_error"
    assert exc.value.param == "model"
    with pytest.raises(openai.NotFoundError) as exc:
        client.get("/no/such/route", cast_to=object)
    assert _api_error(exc.value)["type"] == "not_found_error"
    with pytest.raises(openai.APIStatusError) as exc:
        client.get("/completions", cast_to=object)
    assert exc.value.status_code == 405 and exc.value.type == "invalid_request_error"
    with pytest.raises(openai.APIStatusError) as exc:
        client.completions.create(model=MODEL, prompt=[1] * 200_000)
    assert exc.value.status_code == 413 and _api_error(exc.value)["type"] == "invalid_request_error"

    def chunked():  # no Content-Length: the limit must hold while the body streams in
        yield b'{"model": "grok1-tiny", "prompt": ['
        for _ in range(100):
            yield b"1, " * 1000
        yield b"1]}"

    r = httpx.post(server.base_url + "/completions", content=chunked(),
                   headers={"Authorization": f"Bearer {GOOD}", "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as exc:
        client.post("/completions", cast_to=object, body={"model": MODEL, "prompt": [1]},
                    options={"headers": {"Content-Type": "text/plain"}})
    assert exc.value.status_code == 415 and exc.value.type == "invalid_request_error"
    r = httpx.post(server.base_url + "/completions", content=b"model=x",
                   headers={"Authorization": f"Bearer {GOOD}", "Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error"


def test_429_per_key_rate_limit(server: LiveServer) -> None:
    limited = OpenAI(base_url=server.base_url, api_key=RPM2, max_retries=0)
    limited.models.list()
    limited.models.list()
    with pytest.raises(openai.RateLimitError) as exc:
        limited.models.list()
    assert exc.value.code == "rate_limit_exceeded" and exc.value.type == "rate_limit_error"
    h = exc.value.response.headers
    assert h["x-should-retry"] == "true" and float(h["retry-after"]) > 0 and int(h["retry-after-ms"]) > 0


def test_500_carries_request_id_and_server_survives(client: OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as exc:
        client.get("/test-only/boom", cast_to=object)
    err = _api_error(exc.value)
    assert err["type"] == "server_error"
    assert exc.value.response.headers["x-request-id"] in err["message"]
    assert client.completions.create(model=MODEL, prompt=[1, 2], max_tokens=1).usage.completion_tokens == 1


def test_logprob_shapes_are_finite(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=[9, 8, 7], max_tokens=3, logprobs=3, echo=True,
                                  extra_body={"return_tokens_as_token_ids": True})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert all(math.isfinite(x) for x in lp.token_logprobs[1:])


def test_logit_bias_and_engine_sampler_fields(client: OpenAI) -> None:
    r = client.completions.create(model=MODEL, prompt=[9, 8, 7], max_tokens=4, temperature=0, logprobs=0,
                                  logit_bias={"77": 100},
                                  extra_body={"return_tokens_as_token_ids": True, "ignore_eos": True})
    assert r.choices[0].logprobs.tokens == ["token_id:77"] * 4
    r = client.completions.create(model=MODEL, prompt=[9, 8, 7], max_tokens=4, logprobs=0, seed=5,
                                  extra_body={"top_k": 5, "min_p": 0.05, "typical_p": 0.9, "repetition_penalty": 1.1,
                                              "min_tokens": 4, "samplers": ["top_k", "min_p", "temperature"],
                                              "ignore_eos": True})
    assert r.usage.completion_tokens == 4
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1], logit_bias={"x": 1})
    assert exc.value.param == "logit_bias"
    with pytest.raises(openai.BadRequestError) as exc:
        client.completions.create(model=MODEL, prompt=[1], presence_penalty=3)
    assert exc.value.param == "presence_penalty"
