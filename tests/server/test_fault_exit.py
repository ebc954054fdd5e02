"""Faults that end the process, on a real ``grokd serve`` subprocess (grok1-tiny): the engine loop
thread dying (``GROKD_FAULTS=loop_seed=S``) answers the request in flight with 503, takes
``/ready`` to 503 and makes the server exit with status 1 within seconds; after SIGTERM starts a
drain, a second SIGTERM stops the server at once (killed by the signal)."""

from __future__ import annotations

import signal
import threading
import time

import httpx

from grokd.engine.faults import ENV_VAR
from tests.server.serving import start_process

MODEL = "grok1-tiny"
LOOP_SEED = 10


def args(model_dir) -> list[str]:
    return ["--model", str(model_dir), "--dtype", "float32", "--max-model-len", "4096", "--drain-timeout", "60"]


def long_stream(url: str, seen: dict) -> None:
    body = {"model": MODEL, "prompt": [11, 12, 13, 14], "max_tokens": 4000, "ignore_eos": True, "stream": True,
            "logprobs": 0, "return_tokens_as_token_ids": True}
    try:
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=120) as r:
            for line in r.iter_lines():
                seen.setdefault("lines", []).append(line)
    except httpx.HTTPError as exc:
        seen["error"] = exc


def test_the_engine_loop_dying_fails_requests_and_exits_non_zero(grok1_tiny_dir) -> None:
    proc = start_process(args(grok1_tiny_dir), env={ENV_VAR: f"loop_seed={LOOP_SEED}"})
    try:
        r = httpx.post(proc.url + "/v1/completions", timeout=60,
                       json={"model": MODEL, "prompt": [1, 2], "max_tokens": 2, "seed": LOOP_SEED})
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
        t0 = time.monotonic()
        assert proc.proc.wait(timeout=15) == 1
        assert time.monotonic() - t0 < 15
    finally:
        proc.stop()


def test_a_second_sigterm_stops_at_once(grok1_tiny_dir) -> None:
    proc = start_process(args(grok1_tiny_dir))
    try:
        seen: dict = {}
        reader = threading.Thread(target=long_stream, args=(proc.url, seen))
        reader.start()
        deadline = time.monotonic() + 60
        while not any(line.startswith("data: {") for line in seen.get("lines", [])):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.terminate()  # drains: the stream would run for minutes
        deadline = time.monotonic() + 10
        while httpx.get(proc.url + "/ready").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        t0 = time.monotonic()
        proc.terminate()
        assert proc.proc.wait(timeout=15) == -signal.SIGTERM
        assert time.monotonic() - t0 < 15
        reader.join(30)
        assert "data: [DONE]" not in seen.get("lines", [])
    finally:
        proc.stop()
