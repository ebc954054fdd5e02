"""The OpenAPI document holds: schemathesis over every operation of a live server.

A real server on 127.0.0.1 (the default model, float32, a 128-token context so that generated
``max_tokens`` stay small, its job store in a temporary directory, one API key) and schemathesis's
own CLI over ``/openapi.json``: every check (status codes, content types, response schemas,
acceptance of valid and rejection of invalid data), the coverage, fuzzing and stateful phases
(files → batches → outputs, stored responses) with a fixed seed. The run must find no failure in
at least 1,000 cases.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from grokd.server.config import ServerConfig
from tests.server.contract.hooks import MODEL_ENV
from tests.server.serving import REPO, LiveServer, start_server

HERE = Path(__file__).parent
KEY = "sk-contract-0000000000"
MIN_CASES = 1000


@pytest.fixture(scope="module")
def server(smollm2_gguf, tmp_path_factory) -> LiveServer:
    state_dir = tmp_path_factory.mktemp("contract-state")
    live = start_server(ServerConfig(dtype="float32", max_model_len=128, api_key=[KEY], state_dir=str(state_dir)))
    yield live
    live.stop()


def test_schemathesis_finds_no_failure(server: LiveServer, tmp_path: Path) -> None:
    st = Path(sys.executable).with_name("st")
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.server.contract.hooks",
           MODEL_ENV: server.state.registry.default.id, "PYTHONPATH": str(REPO), "NO_COLOR": "1"}
    run = subprocess.run(
        [str(st), "--config-file", str(HERE / "schemathesis.toml"), "run", server.url + "/openapi.json",
         "--max-examples", "30", "--seed", "1", "--header", f"Authorization: Bearer {KEY}",
         "--report", "junit", "--report-dir", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[out.find("FAILURES"):][:8000] if "FAILURES" in out else out[-6000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", out)
    assert cases is not None, out[-3000:]
    assert int(cases.group(1)) == int(cases.group(2)) >= MIN_CASES, cases.group(0)
    assert "Stateful" in out and re.search(r"API Links:\s+([1-9]\d*) covered", out), out[-3000:]
    # the stateful phase went from an upload to a batch over it
    batches = httpx.get(server.base_url + "/batches", params={"limit": 100},
                        headers={"Authorization": f"Bearer {KEY}"}, timeout=30).json()["data"]
    assert any(b["input_file_id"].startswith("file-") for b in batches), batches[:3]
