"""``grokd plan`` through the real command entry: the built-in Grok-1 and the tiny release fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from grokd.server.cli import main
from grokd.server.plan_cli import parse_size

ROOT = Path(__file__).resolve().parents[2]


def test_sizes() -> None:
    assert parse_size("80GiB") == 80 * 2**30
    assert parse_size("141GB") == 141 * 10**9
    assert parse_size("1.5 GiB") == 3 * 2**29
    assert parse_size("1024") == 1024
    with pytest.raises(Exception, match="80GiB"):
        parse_size("80 gigs")


def test_builtin_grok1_int8_on_8_h100(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", "grok-1", "--tensor-parallel-size", "8", "--gpu-memory", "80GiB",
               "--weights-dtype", "int8"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "  weights         37.25 GiB" in out
    assert "KV per token   32.00 KiB per GPU (64 layers × 2 × 1 kv heads × 128 × 2 B)" in out
    assert "KV tokens      1,095,520 per GPU (68,470 blocks of 16)" in out
    assert "contexts       133 concurrent 8192-token contexts" in out
    assert out.rstrip().endswith("fits")


def test_builtin_grok1_bf16_on_8_h100_does_not_fit_and_exits_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "grokd.server.cli", "plan", "--model", "grok-1", "-tp", "8",
         "--gpu-memory", "80GiB", "--weights-dtype", "bfloat16"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "does not fit: weights 73.89 GiB" in proc.stdout
    assert "exceed the 72.00 GiB budget per GPU by 3.21 GiB" in proc.stdout


def test_json_and_kv_int8(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", "grok-1", "-tp", "8", "--gpu-memory", "141GiB", "--kv-cache-dtype", "int8",
               "--max-model-len", "4096", "--enable-expert-parallel", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0 and data["fits"] is True
    assert data["kv_bytes_per_token"] == 64 * 2 * (128 + 4)
    assert data["experts_per_rank"] == 1 and data["max_model_len"] == 4096
    assert data["full_contexts"] == data["kv_blocks"] // (4096 // 16)


def test_tiny_release_fixture(grok1_tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", str(grok1_tiny_dir), "-tp", "8", "--gpu-memory", "2GiB", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert (data["q_heads_per_rank"], data["kv_heads_per_rank"], data["weights_dtype"]) == (2, 1, "int8")
    assert data["max_model_len"] == 256  # the fixture's config, not Grok-1's
    # 2 layers × 2 × 1 KV head × 16 × 2 B
    assert data["kv_bytes_per_token"] == 2 * 2 * 1 * 16 * 2
    # per rank and layer: q 256×32 + 32·2, k and v 256×16 + 16·2, o 32×256 + 256·2; experts
    # 8 × (2·(256×43 + 43·2) + 43×256 + 256·2); 128 vocab rows float32 + bf16; router, norms
    attention = 2 * ((256 * 32 + 64) + 2 * (256 * 16 + 32) + (32 * 256 + 512))
    experts = 2 * 8 * (2 * (256 * 43 + 86) + (43 * 256 + 512))
    rest = 128 * 256 * 6 + 2 * (8 * 256 + 4 * 256) * 4 + 256 * 4
    assert data["weights_per_gpu"] == attention + experts + rest


def test_tiny_fixture_too_many_gpus_is_an_error(grok1_tiny_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", str(grok1_tiny_dir), "-tp", "3", "--gpu-memory", "1GiB"])
    assert rc == 2
    assert "--tensor-parallel-size 3 does not divide the query heads (16)" in capsys.readouterr().err


def test_missing_checkpoint_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["plan", "--model", str(tmp_path / "nope"), "-tp", "8", "--gpu-memory", "80GiB"])
    assert rc == 2
    assert "no such file or directory" in capsys.readouterr().err
