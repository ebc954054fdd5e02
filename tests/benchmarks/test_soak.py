"""``grokd bench soak`` against a real ``grokd serve`` it starts itself (the tiny Grok-1 fixture):
a few streams for a few seconds, half of them dropped after their first chunk."""

from __future__ import annotations

import json

from grokd.benchmarks.soak import Sample, rss_growth
from grokd.server.cli import main as grokd

# the fixture has no tokenizer: per-token logprobs make every token its own streamed chunk
TOKEN_CHUNKS = '{"logprobs": 0, "return_tokens_as_token_ids": true}'


def test_soak_reports_nothing_lost_and_an_rss_curve(grok1_tiny_dir, tmp_path) -> None:
    out, summary = tmp_path / "soak.json", tmp_path / "soak.txt"
    rc = grokd(["bench", "soak", "--model", str(grok1_tiny_dir), "--serve-arg=--dtype", "--serve-arg=float32",
                "--serve-arg=--max-num-seqs", "--serve-arg=2", "--streams", "4", "--duration-s", "5",
                "--disconnect-fraction", "0.5", "--input-len", "8", "--output-len", "6", "--sample-every-s", "1",
                "--hang-timeout-s", "60", "--extra-body", TOKEN_CHUNKS, "--json", str(out), "--summary", str(summary)])
    data = json.loads(out.read_text())
    s = data["summary"]
    assert rc == 0, summary.read_text()
    assert (s["errors"], s["hung"], s["kv_blocks_after"], s["ready_after"]) == (0, 0, 0, 200)
    assert s["completed"] > 0 and s["dropped"] > 0
    assert s["requests"] == s["completed"] + s["dropped"]
    assert s["output_tokens"] == 6 * s["completed"]  # ignore_eos: every completed stream ran to max_tokens
    assert s["ttft_ms"]["p50"] > 0 and s["itl_ms"]["p99"] > 0
    assert s["kv_pool_bytes"] > 0 and s["kv_blocks_total"] > 0
    assert len(data["samples"]) >= 4 and all(x["rss_bytes"] > 0 for x in data["samples"])
    assert s["rss"]["warm_rss_bytes"] > 0
    text = summary.read_text()
    assert text.startswith("soak: 4 streams, 50% dropped") and "RSS curve (MiB): 0s:" in text
    assert text.rstrip().endswith("PASS")


def test_rss_growth_is_measured_from_the_first_sample_after_warm_up() -> None:
    samples = [Sample(t, rss, 0, 1, 1, 0, 0) for t, rss in ((0, 50), (10, 100), (20, 100), (30, 104), (40, 102))]
    g = rss_growth(samples, duration_s=50)  # warm-up: the first 10 s
    assert g["warm_t_s"] == 10 and g["warm_rss_bytes"] == 100 and g["peak_rss_bytes"] == 104
    assert abs(g["growth_after_warm"] - 0.04) < 1e-9
    assert rss_growth(samples[:1], duration_s=50) == {}
