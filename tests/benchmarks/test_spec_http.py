"""``grokd bench spec-http`` against two real ``grokd serve`` instances of the default model on
127.0.0.1 at once, one plain and one with n-gram speculation, their rounds alternating: the same
greedy output (hash) from both, and the fields RESULTS.md quotes."""

from __future__ import annotations

import argparse
import json

from grokd.benchmarks.spec_http import add_arguments, main
from grokd.server.config import ServerConfig
from tests.server.serving import start_server

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4, "prompt_lookup_min": 2}


def test_plain_and_speculative_servers_alternate_and_give_the_same_output(tmp_path, capsys) -> None:
    servers = [start_server(ServerConfig(max_model_len=512, speculative_config=spec)) for spec in (None, NGRAM)]
    try:
        p = argparse.ArgumentParser()
        add_arguments(p)
        out = tmp_path / "spec.json"
        args = p.parse_args(["--base-url", *(s.url + "/v1" for s in servers), "--label", "plain", "ngram",
                             "--model", "smollm2-135m-instruct", "--streams", "2", "--workloads", "grounded",
                             "--max-tokens", "10", "--rounds", "2", "--json", str(out)])
        assert main(args) == 0
    finally:
        for s in servers:
            s.stop()
    data = json.loads(out.read_text())
    assert data["meta"]["labels"] == ["plain", "ngram"] and data["meta"]["cpu"]
    rows = {r["label"]: r for r in data["rows"]}
    assert set(rows) == {"plain", "ngram"}
    for r in rows.values():
        assert (r["workload"], r["streams"], r["completion_tokens"]) == ("grounded", 2, 20)
        assert r["tok_s"] > 0 and len(r["seconds"]) == 2
    assert rows["plain"]["output_sha256"] == rows["ngram"]["output_sha256"]
    table = capsys.readouterr().out
    assert "| run | workload | streams | tok/s | vs plain |" in table and "| plain | grounded | 2 |" in table
