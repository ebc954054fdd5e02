"""What the engine asks of a drafter, and the one the speculative config names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from grokd.engine.config import SpeculativeConfig
from grokd.engine.spec.ngram import NgramProposer


class Proposer(Protocol):
    """Drafts a continuation of a sequence: at most ``limit`` tokens (``[]``: no guess). Drafts
    are point guesses (no distribution): verification treats them as a point mass."""

    def propose(self, token_ids: Sequence[int], limit: int | None = None) -> list[int]: ...


def build_proposer(config: SpeculativeConfig) -> Proposer:
    """The drafter ``config`` names; a ValueError for a method not served yet."""
    if config.method == "ngram":
        return NgramProposer(config.num_speculative_tokens, config.prompt_lookup_min, config.prompt_lookup_max)
    raise ValueError(f"speculative_config.method: {config.method!r} is not served yet; use 'ngram'")
