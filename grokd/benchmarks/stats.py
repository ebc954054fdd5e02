"""Latency statistics for the load generator: percentiles, per-request metrics, goodput.

Kept free of numpy and HTTP so the arithmetic is unit-tested on its own; the definitions follow
the usual serving-benchmark conventions (TTFT, TPOT excluding the first token, ITL between
streamed chunks) so figures are comparable with other tools' reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def summarize(values: Sequence[float], scale: float = 1.0) -> dict[str, float]:
    """mean and p50/p90/p99 of ``values`` × ``scale`` (e.g. 1000 for seconds → ms)."""
    out = {"mean": mean(values) * scale}
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(values, q) * scale
    return out


@dataclass
class RequestResult:
    """One request as the client saw it. Times are seconds on the client's monotonic clock."""

    prompt_tokens: int
    output_tokens: int = 0
    start: float = 0.0
    ttft: float | None = None  # first content-bearing chunk - start
    latency: float | None = None  # last byte - start
    chunk_times: list[float] = field(default_factory=list)  # arrival of each content chunk
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.latency is not None

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first; None with fewer than two tokens."""
        if not self.ok or self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)  # type: ignore[operator]

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.chunk_times, self.chunk_times[1:], strict=False)]


@dataclass(frozen=True)
class SLO:
    """A request is 'good' when every set bound holds (milliseconds)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None
    e2e_ms: float | None = None

    def met(self, r: RequestResult) -> bool:
        if not r.ok:
            return False
        if self.ttft_ms is not None and (r.ttft is None or r.ttft * 1e3 > self.ttft_ms):
            return False
        tpot = r.tpot
        if self.tpot_ms is not None and tpot is not None and tpot * 1e3 > self.tpot_ms:
            return False
        return not (self.e2e_ms is not None and r.latency * 1e3 > self.e2e_ms)  # type: ignore[operator]

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.ttft_ms, self.tpot_ms, self.e2e_ms))


def goodput(results: Sequence[RequestResult], duration_s: float, slo: SLO) -> float:
    """Requests per second that completed within the SLO."""
    if duration_s <= 0:
        return math.nan
    return sum(1 for r in results if slo.met(r)) / duration_s


def aggregate(results: Sequence[RequestResult], duration_s: float, slo: SLO | None = None) -> dict:
    """The summary one load level reports: throughput, latency percentiles (ms), goodput."""
    ok = [r for r in results if r.ok]
    out_tok = sum(r.output_tokens for r in ok)
    in_tok = sum(r.prompt_tokens for r in ok)
    itls = [x for r in ok for x in r.itls]
    summary = {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": duration_s,
        "input_tokens": in_tok,
        "output_tokens": out_tok,
        "request_throughput": len(ok) / duration_s if duration_s > 0 else math.nan,
        "output_throughput": out_tok / duration_s if duration_s > 0 else math.nan,
        "total_token_throughput": (in_tok + out_tok) / duration_s if duration_s > 0 else math.nan,
        "ttft_ms": summarize([r.ttft for r in ok if r.ttft is not None], 1e3),
        "tpot_ms": summarize([t for r in ok if (t := r.tpot) is not None], 1e3),
        "itl_ms": summarize(itls, 1e3),
        "e2e_ms": summarize([r.latency for r in ok], 1e3),  # type: ignore[misc]
    }
    errors = sorted({r.error for r in results if r.error})
    if errors:
        summary["errors"] = errors[:5]
    if slo is not None and slo.active:
        summary["goodput"] = goodput(results, duration_s, slo)
        summary["slo"] = {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms, "e2e_ms": slo.e2e_ms}
    return summary
