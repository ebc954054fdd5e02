"""Back-pressure and lifecycle on a real server (grok1-tiny): a full queue answers 429 with
Retry-After and openai-python's retry then succeeds; a client that disconnects mid-stream frees
its KV blocks at once; SIGTERM drains (503 to new work, in-flight requests finish)."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest
from openai import OpenAI

from grokd.server.config import ServerConfig
from grokd.server.state import ServerState
from tests.server.serving import LiveServer, serve_state, start_process, start_server, wait_ready, wait_until

MODEL = "grok1-tiny"
# The fixture's positions extend past its 256 trained ones (rotary), so a long context makes a
# request that runs for seconds unless it is aborted.
MAX_MODEL_LEN = 4096
LONG = {"model": MODEL, "prompt": [11, 12, 13, 14], "max_tokens": 4000, "ignore_eos": True, "stream": True,
        "logprobs": 0, "return_tokens_as_token_ids": True}  # no tokenizer: logprobs make every token a chunk


@pytest.fixture(scope="module")
def server(grok1_tiny_dir) -> LiveServer:
    # one running sequence and one waiting slot: a third request finds the queue full
    config = ServerConfig(model=str(grok1_tiny_dir), dtype="float32", max_num_seqs=1, max_queued_requests=1,
                          retry_after_s=1.0, max_model_len=MAX_MODEL_LEN)
    live = start_server(config)
    yield live
    live.stop()


def _count_429(server: LiveServer) -> float:
    text = httpx.get(server.url + "/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("grokd_http_requests_total") and 'status="429"' in line)



def test_disconnect_mid_stream_frees_kv_blocks(server: LiveServer) -> None:
    engine = server.state.engine
    with httpx.stream("POST", server.base_url + "/completions", json=LONG, timeout=30) as r:
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: {"):
                got += 1
            if got >= 3:
                break
        assert engine.stats().kv_blocks_used > 0
        assert engine.stats().num_running == 1
    # the response is closed here: the server must abort the request and free its blocks at once
    assert wait_until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().num_running == 0, 5.0)
    assert engine.stats().generation_tokens_total < 4000
    metrics = httpx.get(server.url + "/metrics").text
    assert "grokd_kv_blocks_used 0.0" in metrics


def test_disconnect_during_non_streaming_request_aborts_it(server: LiveServer) -> None:
    engine = server.state.engine
    body = {**LONG, "stream": False}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/completions", json=body, timeout=0.5)
    assert wait_until(lambda: engine.stats().kv_blocks_used == 0 and engine.stats().num_running == 0, 5.0)


def test_queue_full_429_then_client_retry_succeeds(server: LiveServer) -> None:
    strict = OpenAI(base_url=server.base_url, api_key="none", max_retries=0)
    patient = OpenAI(base_url=server.base_url, api_key="none", max_retries=3)
    # A runs (the only running slot) ...
    a = httpx.stream("POST", server.base_url + "/completions", json=LONG, timeout=30)
    resp_a = a.__enter__()
    it = resp_a.iter_lines()
    assert next(line for line in it if line.startswith("data: {"))
    # ... B waits (the only queue slot) ...
    b_result: dict = {}
    b = threading.Thread(target=lambda: b_result.update(
        r=strict.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=2)))
    b.start()
    assert wait_until(lambda: server.state.engine.stats().num_waiting == 1, 5.0)
    # ... so C is told to come back later
    with pytest.raises(openai.RateLimitError) as exc:
        strict.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=2)
    assert exc.value.code == "rate_limit_exceeded" and exc.value.type == "rate_limit_error"
    h = exc.value.response.headers
    assert h["retry-after"] == "1" and h["retry-after-ms"] == "1000" and h["x-should-retry"] == "true"
    # A patient client gets 429 first, sleeps Retry-After, retries and succeeds once A is gone.
    before = _count_429(server)
    c_result: dict = {}
    c = threading.Thread(target=lambda: c_result.update(
        r=patient.with_raw_response.completions.create(model=MODEL, prompt=[1, 2, 3], max_tokens=2)))
    c.start()
    assert wait_until(lambda: _count_429(server) > before, 5.0)
    a.__exit__(None, None, None)  # disconnect A: B runs, the queue empties
    c.join(30)
    b.join(30)
    raw = c_result["r"]
    assert raw.retries_taken >= 1
    assert raw.parse().usage.completion_tokens == 2
    assert b_result["r"].usage.completion_tokens == 2


def test_sigterm_drains_in_flight_and_refuses_new_work(grok1_tiny_dir) -> None:
    proc = start_process(["--model", str(grok1_tiny_dir), "--dtype", "float32", "--drain-timeout", "60",
                          "--max-model-len", str(MAX_MODEL_LEN)])
    try:
        body = {**LONG, "max_tokens": 300}
        with httpx.stream("POST", proc.url + "/v1/completions", json=body, timeout=60) as r:
            lines = r.iter_lines()
            assert next(line for line in lines if line.startswith("data: {"))
            proc.terminate()
            assert wait_until(lambda: httpx.get(proc.url + "/ready").status_code == 503, 5.0)
            ready = httpx.get(proc.url + "/ready")
            assert ready.json()["error"]["code"] == "overloaded" and ready.headers["retry-after"]
            client = OpenAI(base_url=proc.url + "/v1", api_key="none", max_retries=0)
            with pytest.raises(openai.InternalServerError) as exc:
                client.completions.create(model=MODEL, prompt=[1, 2], max_tokens=1)
            assert exc.value.status_code == 503 and exc.value.code == "overloaded"
            assert exc.value.type == "server_error" and exc.value.response.headers["retry-after"]
            assert httpx.get(proc.url + "/health").status_code == 200
            rest = list(lines)
        finals = [line for line in rest if '"finish_reason":"length"' in line]
        assert len(finals) == 1 and [line for line in rest if line][-1] == "data: [DONE]"
        assert proc.proc.wait(timeout=60) == 0
    finally:
        proc.stop()


def test_503_not_ready_while_the_model_loads(grok1_tiny_dir) -> None:
    """grokd serve listens before loading: /health is up, everything else says 503 until ready."""
    from grokd.engine.async_engine import AsyncEngine

    config = ServerConfig(model=str(grok1_tiny_dir), dtype="float32")
    go = threading.Event()

    def load() -> AsyncEngine:
        go.wait(60)  # the test decides when loading may finish
        return AsyncEngine(config.engine_config())

    live = serve_state(ServerState.loading(config, load))
    try:
        assert httpx.get(live.url + "/health").status_code == 200
        ready = httpx.get(live.url + "/ready")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "overloaded"
        assert "retry-after" in ready.headers and ready.headers["x-request-id"]
        client = OpenAI(base_url=live.base_url, api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError) as exc:
            client.models.list()
        assert exc.value.status_code == 503 and exc.value.code == "overloaded"
        assert "not ready" in exc.value.message
        go.set()
        wait_ready(live.url, 60)
        assert client.completions.create(model=MODEL, prompt=[1, 2], max_tokens=1).usage.completion_tokens == 1
    finally:
        go.set()
        live.stop()
