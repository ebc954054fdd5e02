"""Request and sequence state.

A ``Request`` is what a caller submitted; it owns ``n`` ``Sequence``\\ s (one per sample). Only
sequence 0 is queued at first. Once it has finished its prefill, the other ``n - 1`` are *forked*:
they take references on the parent's full prompt blocks (no copy) and recompute only the tail of
the prompt that does not fill a block, then sample on their own.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from grokd.engine.outputs import TokenLogprob
from grokd.engine.sampling_params import SamplingParams
from grokd.engine.spec.stats import DraftStats

if TYPE_CHECKING:
    from grokd.engine.detokenizer import Detokenizer


class Priority(enum.IntEnum):
    """Lower value is served first and preempted last."""

    INTERACTIVE = 0
    BATCH = 1


class SeqStatus(enum.Enum):
    PARKED = "parked"  # sample i > 0 waiting for the parent's prefill
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    """One sample: its tokens, KV blocks and generation state.

    ``token_ids`` is prompt + generated; ``num_computed_tokens`` of them have KV in the cache.
    The tokens still to run through the model are ``token_ids[num_computed_tokens:]``.
    """

    seq_id: int
    request: Request
    index: int
    token_ids: list[int]
    num_prompt_tokens: int
    num_computed_tokens: int = 0
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)
    status: SeqStatus = SeqStatus.WAITING
    generator: torch.Generator | None = None
    structured_state: Any = None
    detok: Detokenizer | None = None
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    num_cached_tokens: int = 0
    # delta since the last output for this sequence
    delta_start_tokens: int = 0
    delta_start_logprobs: int = 0
    num_preemptions: int = 0
    num_steps: int = 0  # engine steps that appended tokens to this sequence
    # speculative decoding: this step's proposed draft (the scheduler takes what fits) and the
    # sequence's acceptance record
    spec_draft: list[int] = field(default_factory=list)
    draft_stats: DraftStats = field(default_factory=DraftStats)

    @property
    def params(self) -> SamplingParams:
        return self.request.params

    @property
    def priority(self) -> int:
        return self.request.priority

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def num_uncomputed(self) -> int:
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED

    def sort_key(self) -> tuple[int, float, int]:
        """Scheduling order: priority, then age, then sample index."""
        return (self.request.priority, self.request.arrival_time, self.seq_id)


@dataclass(eq=False)
class Request:
    request_id: str
    prompt_token_ids: list[int]
    params: SamplingParams
    priority: int = Priority.INTERACTIVE
    arrival_time: float = field(default_factory=time.monotonic)
    seqs: list[Sequence] = field(default_factory=list)
    prompt_logprobs: list[TokenLogprob | None] | None = None
    bad_words_ids: list[list[int]] = field(default_factory=list)
    error: str | None = None
    first_token_time: float | None = None
    wall_arrival_time: float = field(default_factory=time.time)

    @property
    def finished(self) -> bool:
        return all(s.is_finished for s in self.seqs)

    @property
    def wants_prompt_logprobs(self) -> bool:
        """Prompt logprobs asked for and not complete yet (such prompts bypass the prefix cache)."""
        if self.params.prompt_logprobs is None:
            return False
        return self.prompt_logprobs is None or len(self.prompt_logprobs) < len(self.prompt_token_ids)


class SeqIdCounter:
    """Monotonic sequence ids, one counter per engine (not global state)."""

    def __init__(self) -> None:
        self._it = itertools.count()

    def next(self) -> int:
        return next(self._it)


def make_generator(seed: int | None, index: int, device: torch.device | str) -> torch.Generator | None:
    """Per-sample generator: a seeded request draws from its own stream whatever else is batched."""
    if seed is None:
        return None
    gen = torch.Generator(device=device)
    gen.manual_seed((seed + index * 1_000_003) % (2**63))
    return gen
