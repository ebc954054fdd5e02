"""``grokd serve --kernel-backend triton`` on the golden grok1-tiny fixture, on the CPU: every
attention, MoE and int8 projection of the model runs through grokd's Triton kernels under
Triton's interpreter (``TRITON_INTERPRET=1``, given to the server process only), and
/v1/completions reproduces reference.json's greedy tokens and prompt logprobs. The weights stay
in the release's int8 (``--weights-dtype auto``), so the int8 GEMM and the fused MoE dequantise
them as the reference does."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from tests.server.serving import ServerProcess, start_process

pytest.importorskip("triton")

ARGS = ["--dtype", "float32", "--device", "cpu", "--kernel-backend", "triton", "--log-level", "info",
        "--max-num-seqs", "4"]


@pytest.fixture(scope="module")
def server(grok1_tiny_dir: Path) -> ServerProcess:
    srv = start_process(["--model", str(grok1_tiny_dir), *ARGS], timeout=240, env={"TRITON_INTERPRET": "1"})
    yield srv
    srv.stop()


def _check(case: dict, response: httpx.Response) -> None:
    prompt, logits, greedy = case["prompt"], case["logits"], case["greedy"]
    assert response.status_code == 200, response.text
    lp = response.json()["choices"][0]["logprobs"]
    for i in range(1, len(prompt)):
        ref = torch.log_softmax(torch.tensor(logits[i - 1], dtype=torch.float64), dim=-1)
        assert abs(lp["token_logprobs"][i] - ref[prompt[i]].item()) < 2e-3, i
        top = torch.topk(ref, 5)
        for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            assert abs(lp["top_logprobs"][i][f"token_id:{t}"] - v) < 2e-3
    assert [int(t.split(":")[1]) for t in lp["tokens"][len(prompt):]] == greedy


def test_triton_backend_reproduces_reference(server: ServerProcess, grok1_tiny_reference: dict) -> None:
    """All prompts at once: their prefills and then their decode rows share steps (an interpreted
    step costs about the same for one row as for three), each checked against the reference."""
    steps = grok1_tiny_reference["greedy_steps"]
    cases = grok1_tiny_reference["fp32"]["single"]

    def complete(case: dict) -> httpx.Response:
        return httpx.post(server.url + "/v1/completions", timeout=540, json={
            "model": "grok1-tiny", "prompt": case["prompt"], "max_tokens": steps, "temperature": 0, "echo": True,
            "logprobs": 5, "return_tokens_as_token_ids": True, "ignore_eos": True})

    with ThreadPoolExecutor(len(cases)) as pool:
        responses = list(pool.map(complete, cases))
    for case, response in zip(cases, responses, strict=True):
        _check(case, response)


def test_triton_on_cpu_without_interpreter_fails_clearly(grok1_tiny_dir: Path) -> None:
    """Without ``TRITON_INTERPRET`` the Triton kernels would be compiled for a GPU: the server
    refuses to start and says what to set."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-m", "grokd.server.cli", "serve", "--model", str(grok1_tiny_dir), *ARGS,
                          "--port", "1"], env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode != 0
    assert "TRITON_INTERPRET=1" in out.stdout + out.stderr
