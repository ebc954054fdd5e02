"""Injected faults and a stalled client on a real server (grok1-tiny, ``GROKD_FAULTS`` set while
its engine is built): a failing model step fails its requests only (500 naming the request id, or
an in-band stream error), a broken logits processor or NaN logits fail one request of a batch
while the others finish with the tokens they get alone, and a client that stops reading a stream
is aborted after ``--stream-stall-timeout`` with its KV blocks back, while the server answers
others. Faults that kill the engine and signals are in ``test_fault_exit`` (a subprocess)."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from typing import Any

import httpx
import pytest

from grokd.engine.faults import ENV_VAR
from grokd.server.config import ServerConfig
from tests.server.serving import LiveServer, start_server

MODEL = "grok1-tiny"
STEP_SEED, SAMPLER_SEED, NAN_SEED = 7, 8, 9
STALL_S = 1.0


@pytest.fixture(scope="module")
def server(grok1_tiny_dir) -> LiveServer:
    config = ServerConfig(model=str(grok1_tiny_dir), dtype="float32", max_model_len=4096, max_num_seqs=8,
                          stream_stall_timeout_s=STALL_S)
    with pytest.MonkeyPatch.context() as mp:  # read once, when the engine is built
        mp.setenv(ENV_VAR, f"step_seed={STEP_SEED},sampler_seed={SAMPLER_SEED},nan_seed={NAN_SEED}")
        live = start_server(config)
    yield live
    live.stop()


def body(seed: int | None, max_tokens: int = 8, **kw: Any) -> dict[str, Any]:
    return {"model": MODEL, "prompt": [11, 12, 13, 14], "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True, "seed": seed, **kw}


def metric(server: LiveServer, name: str) -> float:
    for line in httpx.get(server.url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def wait_blocks_free(server: LiveServer, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric(server, "grokd_kv_blocks_used") == 0 and metric(server, "grokd_num_requests_running") == 0:
            return True
        time.sleep(0.05)
    return False


def completion(server: LiveServer, b: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.base_url + "/completions", json=b, timeout=60)


def test_a_failing_model_step_is_a_500_naming_the_request_and_the_server_goes_on(server):
    r = completion(server, body(STEP_SEED))
    assert r.status_code == 500
    err = r.json()["error"]
    assert err["code"] == "engine_error" and "request id cmpl-" in err["message"]
    assert "injected fault: model step" in err["message"]
    assert wait_blocks_free(server)
    ok = completion(server, body(1))
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 8


def test_a_failing_model_step_mid_stream_is_an_in_band_error(server):
    with httpx.stream("POST", server.base_url + "/completions", json=body(STEP_SEED, stream=True),
                      timeout=60) as r:
        assert r.status_code == 200
        events = [line for line in r.iter_lines() if line.startswith("data: ")]
    err = json.loads(events[-1].removeprefix("data: "))["error"]
    assert err["code"] == "engine_error" and "request id cmpl-" in err["message"]
    assert "data: [DONE]" not in events
    assert wait_blocks_free(server)


def test_a_broken_processor_and_nan_logits_fail_one_request_of_a_batch(server):
    alone = completion(server, body(1, max_tokens=12)).json()["choices"][0]["logprobs"]["tokens"]
    results: dict[str, httpx.Response] = {}
    good = threading.Thread(target=lambda: results.update(good=completion(server, body(1, max_tokens=12))))
    good.start()
    deadline = time.monotonic() + 10  # the bad ones join the good one's running batch
    while metric(server, "grokd_num_requests_running") == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc, nan = completion(server, body(SAMPLER_SEED, 2)), completion(server, body(NAN_SEED, 2))
    good.join(60)
    assert proc.status_code == 500 and "logits processor" in proc.json()["error"]["message"]
    assert nan.status_code == 500 and "non-finite logits" in nan.json()["error"]["message"]
    assert "request id cmpl-" in nan.json()["error"]["message"]
    choice = results["good"].json()["choices"][0]
    assert choice["finish_reason"] == "length" and choice["logprobs"]["tokens"] == alone
    assert wait_blocks_free(server)


def test_a_client_that_stops_reading_is_aborted_and_its_blocks_return(server, caplog):
    caplog.set_level(logging.WARNING, logger="grokd.server")
    generated = metric(server, "grokd_generation_tokens_total")
    # eight choices with twenty alternatives each: a few KB of events a step, so the buffers fill
    payload = json.dumps(body(1, max_tokens=500, stream=True, logprobs=20, n=8)).encode()
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills in a few hundred tokens
        sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload)
        # never reading: once the buffers are full, no write makes progress for the stall timeout
        deadline = time.monotonic() + 150  # a few steps' worth; steps are slow on a loaded 2-core box
        while not any("read nothing for" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the stalled stream was not aborted"
            time.sleep(0.05)
        assert wait_blocks_free(server, timeout=10)  # aborted in the engine, the socket still open
        assert metric(server, "grokd_generation_tokens_total") - generated < 8 * 500
        ok = completion(server, body(2, max_tokens=2))  # the server answers others
        assert ok.status_code == 200
        sock.settimeout(10)
        received = b""
        while chunk := sock.recv(65536):  # what was buffered, then the server's close: no [DONE]
            received += chunk
    assert received.startswith(b"HTTP/1.1 200") and b"data: [DONE]" not in received
