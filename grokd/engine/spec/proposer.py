"""What the engine asks of a drafter, and the one the speculative config names."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from grokd.engine.config import EngineConfig
from grokd.engine.spec.ngram import NgramProposer
from grokd.engine.tokenizer import Tokenizer


class Proposer(Protocol):
    """Drafts continuations of the step's decoding sequences: for each token history, at most
    its ``limit`` tokens (``[]``: no guess). Drafts are point guesses (no distribution):
    verification treats them as a point mass."""

    def propose_batch(self, histories: Sequence[Sequence[int]], limits: Sequence[int]) -> list[list[int]]: ...


def build_proposer(config: EngineConfig, tokenizer: Tokenizer | None, vocab_size: int) -> Proposer:
    """The drafter ``config.speculative`` names: prompt lookup, or a draft model loaded next to
    the target (a ValueError if its tokenizer differs from ``tokenizer``)."""
    spec = config.speculative
    assert spec is not None
    if spec.method == "draft_model":
        from grokd.engine.spec.draft_model import DraftModelProposer  # it builds an engine: imported late

        assert spec.model is not None
        return DraftModelProposer.load(spec.model, spec.num_speculative_tokens, tokenizer, vocab_size,
                                       config.model, config.scheduler.max_num_seqs)
    return NgramProposer(spec.num_speculative_tokens, spec.prompt_lookup_min, spec.prompt_lookup_max)
