"""What a decode step costs as a function of its query rows, learnt from the steps the engine runs.

Verification rows are not free on the CPU: the projections stream every weight once per tile of 8
rows (``kernels/csrc/linear.c``), attention and the output projection grow with each row, and the
engine walks every drafted position in Python. On a GPU the same rows are nearly free until the
batch becomes compute-bound. Rather than a constant per machine, the engine times every step that
only decodes (``observe``) and keeps an exponential moving average of its seconds per row count;
``estimate`` interpolates between the row counts seen, extrapolates past the largest with the slope
of the last two (or, with one point only, ``prior_row_cost``: a row costs that fraction of a
one-row step, about what the AVX2 machine measured), so the planner (``spec.budget``) can weigh a
draft's expected accepted tokens against the step time it adds. Steps with drafts are observed like
any other, so an estimate that was too cheap corrects itself after a few steps. One that was too
dear would never be corrected that way (the planner stops granting those rows, so they are never
timed again: a load spike could switch drafting off for good), so a row count not observed for
``max_age_steps`` steps is forgotten and estimated from the fresher ones again: the planner tries
it once more, and that step's time is the new estimate.
"""

from __future__ import annotations


class StepCostModel:
    """Seconds per decode step by number of query rows (an EWMA per row count)."""

    def __init__(self, prior_row_cost: float = 0.1, smoothing: float = 0.2, max_age_steps: int = 256) -> None:
        if not 0.0 < smoothing <= 1.0 or prior_row_cost < 0.0 or max_age_steps < 1:
            raise ValueError(f"step cost model: need 0 < smoothing <= 1, prior_row_cost >= 0 and max_age_steps "
                             f">= 1, got {smoothing}, {prior_row_cost}, {max_age_steps}")
        self.prior_row_cost = prior_row_cost
        self.smoothing = smoothing
        self.max_age_steps = max_age_steps
        self._seconds: dict[int, float] = {}
        self._seen_at: dict[int, int] = {}  # the step count at each row count's last observation
        self._steps = 0

    def observe(self, rows: int, seconds: float) -> None:
        self._steps += 1
        old = self._seconds.get(rows)
        self._seconds[rows] = seconds if old is None else old + self.smoothing * (seconds - old)
        self._seen_at[rows] = self._steps
        for stale in [r for r, at in self._seen_at.items() if self._steps - at >= self.max_age_steps]:
            del self._seconds[stale], self._seen_at[stale]

    def observed(self) -> dict[int, float]:
        """The averaged seconds per row count seen so far (a copy)."""
        return dict(sorted(self._seconds.items()))

    def _prior(self, rows: int) -> float:
        """The shape assumed where nothing was observed: a fixed part plus ``prior_row_cost`` per
        row, in units of a one-row step."""
        return 1.0 - self.prior_row_cost + self.prior_row_cost * rows

    def estimate(self, rows: int) -> float:
        """Expected seconds of a ``rows``-row step (prior units while nothing was observed; only
        ratios between estimates matter)."""
        pts = self._seconds
        if not pts:
            return self._prior(rows)
        if rows in pts:
            return pts[rows]
        below = [r for r in pts if r < rows]
        above = [r for r in pts if r > rows]
        if below and above:
            lo, hi = max(below), min(above)
            return pts[lo] + (pts[hi] - pts[lo]) * (rows - lo) / (hi - lo)
        if above:  # fewer rows than any seen: scale the nearest by the prior's shape
            hi = min(above)
            return pts[hi] * self._prior(rows) / self._prior(hi)
        known = sorted(below)
        top = known[-1]
        if len(known) >= 2:
            prev = known[-2]
            slope = max(0.0, (pts[top] - pts[prev]) / (top - prev))
        else:
            slope = pts[top] * self.prior_row_cost / self._prior(top)
        return pts[top] + slope * (rows - top)
