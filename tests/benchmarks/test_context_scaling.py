"""``grokd bench context`` on the tiny Grok-1 fixture (tiny contexts, a few steps: seconds), and
the ratio / target arithmetic on fixed timings."""

from __future__ import annotations

import json

from grokd.benchmarks.context_scaling import summarize
from grokd.server.cli import main as grokd


def test_bench_context_on_fixture(tmp_path) -> None:
    out = tmp_path / "context.json"
    assert grokd(["bench", "context", "--model", "fixture", "--dtype", "float32", "--contexts", "16", "32",
                  "--steps", "3", "--warmup", "1", "--rounds", "2", "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    kv = data["kv_bytes_per_token"]
    # grok1-tiny: 2 layers × 8 kv heads × head_dim 16, float32
    assert kv["allocated"] == kv["runner"] == kv["formula"] == 2 * 2 * 8 * 16 * 4
    assert [r["context"] for r in data["contexts"]] == [16, 32]
    for r in data["contexts"]:
        assert 0 < r["tpot_ms"]["min"] <= r["tpot_ms"]["p50"] <= r["tpot_ms"]["max"]
        assert r["ratio_p50"] > 0 and isinstance(r["within_target"], bool)
    assert data["contexts"][0]["ratio_p50"] == 1.0 and data["contexts"][0]["within_target"]
    assert data["all_within_target"] == all(r["within_target"] for r in data["contexts"])
    assert data["meta"]["batch"] == 1 and data["meta"]["steps"] == 3 and data["target"] == 0.15
    assert data["meta"]["rounds"] == 2 and all(r["steps_timed"] == 6 for r in data["contexts"])
    assert data["meta"]["interleave"] == "steps"  # the default: the contexts' steps timed in turn


def test_bench_context_with_an_int8_kv_cache_counts_the_scales(tmp_path) -> None:
    out = tmp_path / "context.json"
    assert grokd(["bench", "context", "--model", "fixture", "--dtype", "float32", "--kv-cache-dtype", "int8",
                  "--contexts", "16", "24", "--steps", "2", "--warmup", "1", "--interleave", "contexts",
                  "--json", str(out), "--no-progress"]) == 0
    data = json.loads(out.read_text())
    kv = data["kv_bytes_per_token"]
    # 2 layers × K and V × 8 kv heads × (16 int8 values + a 4-byte scale)
    assert kv["allocated"] == kv["runner"] == kv["formula"] == 2 * 2 * 8 * (16 + 4)
    assert kv["kv_cache_dtype"] == "int8" and data["meta"]["kv_cache_dtype"] == "int8"
    assert data["meta"]["interleave"] == "contexts" and all(r["steps_timed"] == 2 for r in data["contexts"])


def test_summarize_judges_p50_against_the_first_context() -> None:
    base = summarize(128, [0.010, 0.010, 0.011], None)
    assert base["tpot_ms"]["p50"] == 10.0 and base["ratio_p50"] == 1.0
    near = summarize(2048, [0.0114, 0.0114, 0.050], base["tpot_ms"])  # one outlier: mean moves, p50 does not
    assert near["ratio_p50"] == 1.14 and near["within_target"] and near["ratio_mean"] > 2
    far = summarize(2048, [0.0116, 0.0116, 0.0116], base["tpot_ms"])
    assert not far["within_target"]
