"""``grokd bench spec`` end to end on the default model, at its smallest: one grounded request,
plain against speculative, same output, the fields RESULTS.md quotes."""

import argparse

import torch

from grokd.benchmarks.speculative import add_arguments, measure


def test_one_grounded_case_side_by_side(smollm2_gguf):
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--streams", "1", "--workloads", "grounded", "--max-tokens", "16", "--rounds", "1",
                         "--threads", "1"])
    threads = torch.get_num_threads()
    try:
        result = measure(args)
    finally:
        torch.set_num_threads(threads)
    (row,) = result["rows"]
    assert row["identical"] and row["generated_tokens"] == 16
    assert row["steps_spec"] < row["steps_plain"] and row["acceptance_rate"] > 0.5
    assert len(row["seconds"]["plain"]) == len(row["seconds"]["spec"]) == 1 and len(row["loadavg_1min"]) == 2
    assert {"commit", "cpu", "loadavg_end", "speculative_config"} <= result["meta"].keys()
