"""The load generator's arithmetic: percentiles, per-request metrics, SLO goodput, workloads."""

from __future__ import annotations

import json
import math

import pytest

from grokd.benchmarks.stats import SLO, RequestResult, aggregate, goodput, percentile, summarize
from grokd.benchmarks.workload import sharegpt, synthetic


def test_percentile_interpolates_like_numpy_linear() -> None:
    xs = [10.0, 1.0, 4.0, 7.0]  # sorted: 1 4 7 10
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 10.0
    assert percentile(xs, 50) == pytest.approx(5.5)
    assert percentile(xs, 90) == pytest.approx(9.1)  # pos 2.7 → 7 + 0.7·3
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_summarize_scales_to_ms() -> None:
    s = summarize([0.1, 0.2, 0.3], 1e3)
    assert s["mean"] == pytest.approx(200.0)
    assert s["p50"] == pytest.approx(200.0)
    assert s["p99"] == pytest.approx(298.0)


def _req(ttft: float, latency: float, tokens: int, start: float = 0.0) -> RequestResult:
    step = (latency - ttft) / max(1, tokens - 1)
    times = [start + ttft + i * step for i in range(tokens)]
    return RequestResult(prompt_tokens=10, output_tokens=tokens, start=start, ttft=ttft,
                         latency=latency, chunk_times=times)


def test_request_tpot_and_itl() -> None:
    r = _req(ttft=0.5, latency=1.4, tokens=10)
    assert r.tpot == pytest.approx(0.1)
    assert r.itls == pytest.approx([0.1] * 9)
    assert _req(0.5, 0.5, 1).tpot is None  # one token: no inter-token time
    assert RequestResult(prompt_tokens=1, error="boom").tpot is None


def test_slo_and_goodput_count_only_requests_meeting_every_bound() -> None:
    fast = _req(0.1, 1.0, 10)  # TPOT 100 ms
    slow_start = _req(2.0, 3.0, 10)
    slow_tokens = _req(0.1, 10.0, 10)  # TPOT 1.1 s
    failed = RequestResult(prompt_tokens=10, error="HTTP 500")
    slo = SLO(ttft_ms=1000, tpot_ms=200)
    assert [slo.met(r) for r in (fast, slow_start, slow_tokens, failed)] == [True, False, False, False]
    assert goodput([fast, slow_start, slow_tokens, failed], 2.0, slo) == pytest.approx(0.5)
    assert SLO(e2e_ms=2000).met(fast) and not SLO(e2e_ms=2000).met(slow_start)
    assert not SLO().active


def test_aggregate_throughput_and_failures() -> None:
    rs = [_req(0.1, 1.0, 10), _req(0.3, 2.0, 20), RequestResult(prompt_tokens=10, error="HTTP 429: busy")]
    s = aggregate(rs, duration_s=4.0, slo=SLO(ttft_ms=200))
    assert (s["completed"], s["failed"]) == (2, 1)
    assert s["output_tokens"] == 30 and s["input_tokens"] == 20
    assert s["output_throughput"] == pytest.approx(7.5)
    assert s["request_throughput"] == pytest.approx(0.5)
    assert s["total_token_throughput"] == pytest.approx(12.5)
    assert s["ttft_ms"]["p50"] == pytest.approx(200.0)
    assert s["goodput"] == pytest.approx(0.25)
    assert s["errors"] == ["HTTP 429: busy"]


def test_synthetic_lengths_are_reproducible_and_in_range() -> None:
    a = synthetic(50, 100, 20, input_range=0.5, output_range=0.25, vocab=(100, 200), seed=3)
    assert a == synthetic(50, 100, 20, input_range=0.5, output_range=0.25, vocab=(100, 200), seed=3)
    for it in a:
        assert 50 <= it.prompt_tokens <= 150 and len(it.prompt) == it.prompt_tokens
        assert 15 <= it.max_tokens <= 25
        assert all(100 <= t < 200 for t in it.prompt)
    assert {it.prompt_tokens for it in synthetic(5, 7, 3)} == {7}
    text = synthetic(2, 12, 4, token_ids=False)
    assert all(isinstance(it.prompt, str) and len(it.prompt.split()) == 12 for it in text)


def test_sharegpt_takes_first_human_turn(tmp_path) -> None:
    data = [
        {"conversations": [{"from": "human", "value": "hi there"}, {"from": "gpt", "value": "x" * 40}]},
        {"conversations": [{"from": "human", "value": "alone"}]},  # no reply: skipped
    ]
    f = tmp_path / "sg.json"
    f.write_text(json.dumps(data))
    items = sharegpt(f, 3)
    assert [it.prompt for it in items] == ["hi there"] * 3
    assert items[0].max_tokens == 10
    assert sharegpt(f, 1, output_len=64)[0].max_tokens == 64
