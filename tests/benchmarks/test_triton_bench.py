"""The CPU side of the Triton GPU benchmark (``grokd.benchmarks.gpu.triton_bench``): its arguments
and the files it writes, from results shaped as its GPU parts return them."""

from __future__ import annotations

import json

from grokd.benchmarks.gpu.triton_bench import parse_args, write_results


def test_arguments():
    args = parse_args(["out", "--skip-tests", "--layers", "3", "--only", "moe", "model"])
    assert str(args.out_dir) == "out" and args.skip_tests and args.layers == 3 and args.only == ["moe", "model"]
    assert parse_args(["x"]).context == 512


def test_results_and_summary(tmp_path):
    results = {
        "device": "NVIDIA H100", "torch": "2.11", "triton": "3.6.0", "errors": {"attention": "RuntimeError: boom"},
        "tests": {"rc": 0, "seconds": 12.5, "tail": "46 passed in 12.1s\n"},
        "copy": {"bytes": 2 << 30, "ms": 1.0, "gb_per_s": 2147.5},
        "moe": [{"weights": "fp8", "tokens": 1, "experts_used": 2, "weight_bytes": 302_000_000, "triton_ms": 0.2, "torch_ms": 1.5,
                 "gb_per_s": 1510.0, "of_copy_bandwidth": 0.7, "rel_err_vs_torch": 3e-3}],
        "model": [{"backend": "triton", "mode": "graphs", "batch": 1, "layers": 2, "context": 512, "step_ms": 3.1,
                   "graphs_captured": 1}],
    }
    write_results(tmp_path / "o", results)
    assert json.loads((tmp_path / "o" / "results.json").read_text()) == results
    md = (tmp_path / "o" / "summary.md").read_text()
    assert "46 passed" in md and "| fp8 | 1 | 2 | 0.200 | 1.500 | 1510 | 70% |" in md
    assert "| triton | graphs | 1 | 2 | 3.10 |" in md and "attention failed" in md
