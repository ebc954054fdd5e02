"""What the engine hands back for a request: cumulative text/tokens plus the latest delta."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenLogprob:
    """Log-probability of one token and its top alternatives ``[(token_id, logprob), ...]``.

    ``logprob``/``top`` are the model's raw distribution. ``processed_logprob``/``processed_top``
    are the same after the request's sampler chain (set only when ``SamplingParams.
    processed_logprobs`` asked for them); tokens the chain removed are left out of
    ``processed_top``."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)
    processed_logprob: float | None = None
    processed_top: list[tuple[int, float]] | None = None


@dataclass
class CompletionOutput:
    """One of the ``n`` samples of a request.

    ``text``/``token_ids``/``logprobs`` are cumulative; ``delta_*`` hold what is new since the
    previous output for this request. ``finish_reason`` is ``stop``, ``length``, ``abort`` or
    ``error``; ``stop_reason`` is the matched stop string or token id when known.
    """

    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] | None = None
    delta_text: str = ""
    delta_token_ids: list[int] = field(default_factory=list)
    delta_logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    # engine steps that produced tokens for this sample (tokens / steps > 1 with speculation), and
    # its speculative tokens drafted and accepted so far
    num_steps: int = 0
    spec_drafted: int = 0
    spec_accepted: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """Snapshot of a request after a step. ``finished`` once every sample has finished."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = False
    num_cached_tokens: int = 0
    prompt_logprobs: list[TokenLogprob | None] | None = None
    error: str | None = None
    fatal: bool = False  # with ``error``: the engine stopped for good, nothing can be served (HTTP 503)
    arrival_time: float = 0.0
    first_token_time: float | None = None
