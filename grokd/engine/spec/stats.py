"""Per-sequence acceptance bookkeeping and the adaptive switch-off."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DraftStats:
    """What drafting did for one sequence: tokens drafted and accepted, and the decode steps and
    tokens emitted in them (``tokens / steps`` is its tokens per step)."""

    drafted: int = 0
    accepted: int = 0
    steps: int = 0
    tokens: int = 0
    disabled: bool = False

    def record(self, drafted: int, accepted: int, emitted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        self.steps += 1
        self.tokens += emitted

    def update_switch(self, min_drafted: int, min_rate: float) -> None:
        """Stop drafting for good once ``min_drafted`` drafted tokens show an acceptance rate
        under ``min_rate``: on free text drafts seldom match, and each failed one costs rows."""
        if self.drafted >= min_drafted and self.accepted < min_rate * self.drafted:
            self.disabled = True

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0
