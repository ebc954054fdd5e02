"""Smoke runs of ``grokd bench`` on the tiny Grok-1 fixture: the load generator against a real
``grokd serve`` process, and the offline and roofline paths in process (few tokens, seconds)."""

from __future__ import annotations

import json

import pytest

from grokd.benchmarks.roofline import machine_limits, weight_bytes_per_step
from grokd.server.cli import main as grokd
from tests.server.serving import start_process

# the fixture has no tokenizer: per-token logprobs make every token its own streamed chunk
TOKEN_CHUNKS = '{"logprobs": 0, "return_tokens_as_token_ids": true}'


@pytest.fixture(scope="module")
def tiny_server(grok1_tiny_dir):
    proc = start_process(["--model", str(grok1_tiny_dir), "--dtype", "float32", "--max-num-seqs", "4"], timeout=120)
    yield proc
    proc.stop()


def test_bench_serve_closed_loop_and_poisson(tiny_server, tmp_path) -> None:
    out = tmp_path / "serve.json"
    rc = grokd(["bench", "serve", "--base-url", tiny_server.url + "/v1", "--model", "grok1-tiny",
                "--input-len", "8", "--output-len", "6", "--concurrency", "1", "3", "--num-prompts", "4",
                "--slo-ttft", "60000", "--extra-body", TOKEN_CHUNKS, "--json", str(out), "--no-progress"])
    assert rc == 0
    data = json.loads(out.read_text())
    assert [lv["load"] for lv in data["levels"]] == [1, 3]
    for lv in data["levels"]:
        s = lv["summary"]
        assert (s["completed"], s["failed"]) == (4, 0)
        assert s["output_tokens"] == 4 * 6 and s["input_tokens"] == 4 * 8  # ignore_eos: exact lengths
        assert s["ttft_ms"]["p50"] > 0 and s["tpot_ms"]["p50"] > 0 and s["itl_ms"]["p99"] > 0
        assert s["e2e_ms"]["p99"] >= s["ttft_ms"]["p99"]
        assert s["goodput"] == pytest.approx(s["request_throughput"])
    rc = grokd(["bench", "serve", "--base-url", tiny_server.url + "/v1", "--model", "grok1-tiny",
                "--input-len", "8", "--output-len", "4", "--request-rate", "inf", "--num-prompts", "3",
                "--warmup", "0", "--extra-body", TOKEN_CHUNKS, "--json", str(out), "--no-progress"])
    assert rc == 0
    assert json.loads(out.read_text())["levels"][0]["summary"]["output_tokens"] == 12


def test_bench_serve_reports_failures(tiny_server, tmp_path) -> None:
    out = tmp_path / "bad.json"
    rc = grokd(["bench", "serve", "--base-url", tiny_server.url + "/v1", "--model", "no-such-model",
                "--num-prompts", "2", "--warmup", "0", "--json", str(out), "--no-progress"])
    assert rc == 1
    s = json.loads(out.read_text())["levels"][0]["summary"]
    assert s["failed"] == 2 and s["errors"][0].startswith("HTTP 404")


def test_bench_offline_engine_only(tmp_path) -> None:
    out = tmp_path / "offline.json"
    assert grokd(["bench", "offline", "--model", "fixture", "--dtype", "float32", "--batch-sizes", "1", "4",
                  "--prompt-len", "8", "--max-tokens", "4", "--no-hf", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["runs"][0]["grokd"]
    assert [r["concurrency"] for r in rows] == [1, 4]
    assert [r["generated_tokens"] for r in rows] == [4, 16]
    assert all(r["gen_tokens_per_s"] > 0 for r in rows)


def test_roofline_limits_and_moe_bytes() -> None:
    lim = machine_limits(buffer_mb=16, matmul_n=256, reps=2)
    assert all(v > 0 for v in lim.values())
    from grokd.benchmarks.offline import FIXTURE
    from grokd.engine.config import ModelLoadConfig
    from grokd.engine.loader import load_model_and_tokenizer
    model, _, _ = load_model_and_tokenizer(ModelLoadConfig(model=str(FIXTURE), dtype="float32"))
    one, many = weight_bytes_per_step(model, 1), weight_bytes_per_step(model, 64)
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    assert one < many <= total * 1.0001  # batch 1 touches 2 of 8 experts; a big batch nearly all


def test_weight_bytes_count_packed_and_int8_heads_once() -> None:
    """Packed bf16 weights and int8 projections (outside ``parameters()``) are each counted once;
    the output head's own copy replaces the tied embedding table in the per-step bytes."""
    from grokd.engine.config import ModelLoadConfig
    from grokd.engine.loader import load_model_and_tokenizer
    from grokd.kernels.cpu_linear import PanelWeight

    fp32, _, _ = load_model_and_tokenizer(ModelLoadConfig(dtype="float32"))  # nothing packed
    dense = sum(p.numel() for p in fp32.parameters()) * 2  # the same weights in bf16
    bf16, _, _ = load_model_and_tokenizer(ModelLoadConfig(dtype="bfloat16"))
    if isinstance(bf16.layers[0].mlp.gate_up_weight, PanelWeight):  # AVX512-BF16 panels
        assert sum(p.numel() * 2 for p in bf16.parameters()) < 0.25 * dense  # kept outside parameters()
    assert weight_bytes_per_step(bf16, 1) == pytest.approx(dense, rel=1e-3)
    int8, _, _ = load_model_and_tokenizer(ModelLoadConfig(dtype="bfloat16", weights_dtype="int8"))
    # int8 halves every projection and the head; norms and one embedding row stay bf16
    assert 0.49 * dense < weight_bytes_per_step(int8, 1) < 0.52 * dense


def test_bench_profile_step_times_prints_one_line_per_batch(capsys) -> None:
    from grokd.server.cli import main as grokd

    assert grokd(["bench", "profile", "--model", "fixture", "--dtype", "float32", "--prompt-len", "8",
                  "--step-times", "1", "3", "--steps", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("decode step ms by batch (float32, 8 tokens of context, median of 2 steps")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["1", "3"]
    assert all(float(line.split(":")[1]) > 0 for line in lines[1:])
