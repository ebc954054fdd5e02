"""``grokd bench spec-http`` against real ``grokd serve`` instances of the default model on 127.0.0.1,
one plain and one with n-gram speculation: the same greedy output (hash) from both, and the fields
RESULTS.md quotes."""

from __future__ import annotations

import argparse
import json

from grokd.benchmarks.spec_http import add_arguments, main
from grokd.server.config import ServerConfig
from tests.server.serving import start_server

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def _run(url: str, out, label: str) -> dict:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--base-url", url + "/v1", "--model", "smollm2-135m-instruct", "--label", label,
                         "--streams", "2", "--workloads", "grounded", "--max-tokens", "10", "--rounds", "1",
                         "--json", str(out)])
    assert main(args) == 0
    return json.loads(out.read_text())


def test_plain_and_speculative_servers_give_the_same_output(tmp_path) -> None:
    results = {}
    for label, spec in (("plain", None), ("ngram", NGRAM)):
        live = start_server(ServerConfig(max_model_len=512, speculative_config=spec))
        try:
            results[label] = _run(live.url, tmp_path / f"{label}.json", label)
        finally:
            live.stop()
    for label, data in results.items():
        assert data["meta"]["label"] == label and data["meta"]["cpu"]
        assert [(r["workload"], r["streams"]) for r in data["rows"]] == [("grounded", 2)]
        for r in data["rows"]:
            assert r["completion_tokens"] == 10 * r["streams"] and r["tok_s"] > 0 and len(r["seconds"]) == 1
    assert [r["output_sha256"] for r in results["plain"]["rows"]] == [r["output_sha256"] for r in results["ngram"]["rows"]]
