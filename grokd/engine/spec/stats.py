"""Per-sequence acceptance bookkeeping: the planner's acceptance estimate and the adaptive
switch-off with rare retries."""

from __future__ import annotations

from dataclasses import dataclass

# weight kept by older verdicts at each new one: the estimate follows about the last 8 drafts
_DECAY = 0.875


@dataclass
class DraftStats:
    """What drafting did for one sequence: tokens drafted and accepted, and the decode steps and
    tokens emitted in them (``tokens / steps`` is its tokens per step).

    ``hits`` / ``trials``: decayed counts of drafted positions accepted / verified (a verification
    of ``k`` drafted tokens of which ``m`` pass tries ``m + 1`` positions, ``m`` if all pass), the
    per-position acceptance the step planner (``spec.budget``) weighs. ``paused_until``: drafting
    is off until the sequence's step count reaches it (``update_switch``)."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    tokens: int = 0
    hits: float = 0.0
    trials: float = 0.0
    window_drafted: int = 0
    window_accepted: int = 0
    pauses: int = 0
    paused_until: int = 0

    def record(self, drafted: int, accepted: int, emitted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        self.steps += 1
        self.tokens += emitted
        self.window_drafted += drafted
        self.window_accepted += accepted
        tried = accepted + (1 if accepted < drafted else 0)
        self.hits = _DECAY * self.hits + accepted
        self.trials = _DECAY * self.trials + tried

    @property
    def position_rate(self) -> float:
        """Estimated chance that the next drafted position is accepted (a uniform prior: 0.5
        before any verdict)."""
        return (self.hits + 1.0) / (self.trials + 2.0)

    def update_switch(self, step: int, min_drafted: int, min_rate: float, retry_after: int) -> None:
        """Pause drafting once ``min_drafted`` drafted tokens since the last (re)start show an
        acceptance rate under ``min_rate`` (on free text drafts seldom match, and even a proposal
        that is not verified costs its lookup): for ``retry_after`` steps, doubling with each
        failed retry, after which one more window of drafts is tried (text can turn repetitive:
        a list, a quoted passage)."""
        if self.window_drafted >= min_drafted and self.window_accepted < min_rate * self.window_drafted:
            self.paused_until = step + retry_after * 2**self.pauses
            self.pauses += 1
            self.window_drafted = self.window_accepted = 0
            self.hits = self.trials = 0.0

    def paused(self, step: int) -> bool:
        return step < self.paused_until

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0
