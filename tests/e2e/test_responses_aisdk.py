"""/v1/responses end to end through the Vercel AI SDK (``ai`` with ``@ai-sdk/xai``, pinned in
tests/e2e/aisdk/package.json and its lock file): ``npm ci`` installs them once into
tests/e2e/aisdk/node_modules, together with the ``node`` package's Node 22 binary (the SDK needs
Node >= 22), and tests/e2e/aisdk/responses.mjs runs generateText, streamText, a two-step tool round
trip and generateObject against a real uvicorn server on 127.0.0.1, printing one JSON object.
No registry is a failure, not a skip: only GPU needs skip."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from grokd.server.config import ServerConfig
from grokd.server.state import ServerState
from tests.server.serving import LiveServer, serve_state, wait_ready

KEY = "sk-aisdk-key-0000000"
SLOW = "sk-aisdk-slow-000000"
AISDK = Path(__file__).parent / "aisdk"
NODE = AISDK / "node_modules" / ".bin" / "node"


def _npm_ci() -> None:
    """``npm ci`` unless node_modules already holds what the lock file pins (npm writes
    node_modules/.package-lock.json, a copy of the lock's packages, after a complete install)."""
    installed = AISDK / "node_modules" / ".package-lock.json"
    if NODE.exists() and installed.exists() and installed.stat().st_mtime >= (AISDK / "package-lock.json").stat().st_mtime:
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is not installed: the AI SDK test needs npm to install tests/e2e/aisdk")
    r = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=AISDK, capture_output=True, text=True,
                       timeout=300)
    if r.returncode != 0 or not NODE.exists():
        pytest.fail(f"npm ci in {AISDK} failed (is the npm registry reachable?):\n{r.stdout}\n{r.stderr}")


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory: pytest.TempPathFactory) -> LiveServer:
    from grokd.engine.async_engine import AsyncEngine

    state_dir = tmp_path_factory.mktemp("aisdk-state")
    config = ServerConfig(dtype="float32", max_model_len=1024, state_dir=str(state_dir), api_key=[KEY, f"{SLOW} rpm=1"])
    engine = AsyncEngine(config.engine_config())
    engine.start()
    live = serve_state(ServerState.build(config, engine, manage_engine=False))
    wait_ready(live.url, 120)
    yield live
    live.stop()
    engine.shutdown()


@pytest.fixture(scope="module")
def results(server: LiveServer) -> dict[str, Any]:
    _npm_ci()
    env = {**os.environ, "GROKD_URL": server.base_url, "GROKD_KEY": KEY, "GROKD_SLOW_KEY": SLOW,
           "GROKD_MODEL": server.state.registry.default.id}
    r = subprocess.run([str(NODE), "responses.mjs"], cwd=AISDK, env=env, capture_output=True, text=True,
                       timeout=180)
    assert r.returncode == 0, f"responses.mjs failed:\n{r.stdout}\n{r.stderr}"
    out: dict[str, Any] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def test_generate_text_and_usage(results: dict[str, Any], server: LiveServer) -> None:
    gen = results["generate"]
    assert gen["text"] and "Paris" in gen["text"]
    usage = gen["usage"]
    assert usage["inputTokens"] > 0 and 0 < usage["outputTokens"] <= 24
    # the usage the SDK reports is the one grokd stored with the response
    stored = httpx.get(f"{server.base_url}/responses/{gen['responseId']}",
                       headers={"Authorization": f"Bearer {KEY}"}).json()
    assert stored["usage"]["input_tokens"] == usage["inputTokens"]
    assert stored["usage"]["output_tokens"] == usage["outputTokens"]


def test_stream_text(results: dict[str, Any]) -> None:
    stream = results["stream"]
    assert stream["text"] == results["generate"]["text"] and stream["deltas"] > 1
    assert stream["usage"]["outputTokens"] == results["generate"]["usage"]["outputTokens"]
    assert stream["usage"]["inputTokens"] == results["generate"]["usage"]["inputTokens"]


def test_tool_round_trip(results: dict[str, Any]) -> None:
    first, second = results["tool"]["steps"]
    calls = first["toolCalls"]  # the grammar allows parallel calls: each gets its own result
    assert calls and all(c["name"] == "get_weather" and isinstance(c["input"]["city"], str) for c in calls)
    assert len(first["toolResults"]) == len(calls)
    assert all(r["output"]["temperature_c"] == 21 for r in first["toolResults"])
    assert not second["toolCalls"] and second["text"] and results["tool"]["text"] == second["text"]


def test_generate_object(results: dict[str, Any]) -> None:
    obj = results["object"]
    assert obj["parsed"] is True and isinstance(obj["object"]["name"], str)
    assert obj["usage"]["outputTokens"] > 0


def test_errors_are_api_call_errors(results: dict[str, Any]) -> None:
    errors = results["errors"]
    bad = errors["badRequest"]
    assert bad["apiCallError"] and bad["statusCode"] == 400 and not bad["retryable"]
    assert "context" in bad["message"].lower() or "max_output_tokens" in bad["message"], bad
    assert errors["first"] is None  # the first request of the minute goes through
    limited = errors["rateLimited"]
    assert limited["apiCallError"] and limited["statusCode"] == 429 and limited["retryable"], limited
