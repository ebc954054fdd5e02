"""Per-request generation parameters, validated once when the request is built."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_LOGPROBS = 20
# Bounds on the per-request lists a sampler walks each step (or tokenizes when the request is
# added, on the engine thread): far above real use, far below what stalls a step.
MAX_LOGIT_BIAS = 1024  # token ids in logit_bias
MAX_BAD_WORDS = 256  # bad_words entries
MAX_STOP_TOKEN_IDS = 256  # stop_token_ids entries


@dataclass
class SamplingParams:
    """What to generate and how. Defaults follow OpenAI (temperature 1, no penalties).

    ``samplers`` optionally fixes the order of logits processors by registered name (llama.cpp's
    ``--samplers``); ``extra`` carries parameters of registered third-party samplers by name.
    ``structured`` is an opaque grammar spec consumed by the structured-output backend.
    """

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1 = disabled
    min_p: float = 0.0
    typical_p: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    min_tokens: int = 0
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    bad_words: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None  # top-k alternatives per generated token (0 = chosen token only)
    prompt_logprobs: int | None = None
    # with ``logprobs``: also report the distribution after the sampler chain (TokenLogprob.processed_*)
    processed_logprobs: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    samplers: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    structured: Any = None

    def validate(self) -> None:
        """Raise ``ValueError("<field>: <problem>")`` for any out-of-range value."""
        checks: list[tuple[bool, str]] = [
            (self.n >= 1, "n: must be >= 1"),
            (self.max_tokens is None or self.max_tokens >= 1, "max_tokens: must be >= 1"),
            (0.0 <= self.temperature <= 2.0, "temperature: must be in [0, 2]"),
            (0.0 < self.top_p <= 1.0, "top_p: must be in (0, 1]"),
            (self.top_k >= -1, "top_k: must be -1, 0 (disabled) or positive"),
            (0.0 <= self.min_p <= 1.0, "min_p: must be in [0, 1]"),
            (0.0 < self.typical_p <= 1.0, "typical_p: must be in (0, 1]"),
            (-2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty: must be in [-2, 2]"),
            (-2.0 <= self.presence_penalty <= 2.0, "presence_penalty: must be in [-2, 2]"),
            (self.repetition_penalty > 0.0, "repetition_penalty: must be > 0"),
            (all(-100.0 <= b <= 100.0 for b in self.logit_bias.values()), "logit_bias: values must be in [-100, 100]"),
            (len(self.logit_bias) <= MAX_LOGIT_BIAS,
             f"logit_bias: at most {MAX_LOGIT_BIAS} entries are allowed, got {len(self.logit_bias)}"),
            (len(self.bad_words) <= MAX_BAD_WORDS,
             f"bad_words: at most {MAX_BAD_WORDS} entries are allowed, got {len(self.bad_words)}"),
            (len(self.stop_token_ids) <= MAX_STOP_TOKEN_IDS,
             f"stop_token_ids: at most {MAX_STOP_TOKEN_IDS} entries are allowed, got {len(self.stop_token_ids)}"),
            (self.min_tokens >= 0, "min_tokens: must be >= 0"),
            (
                self.max_tokens is None or self.min_tokens <= self.max_tokens,
                "min_tokens: must not exceed max_tokens",
            ),
            (
                self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
                f"logprobs: must be in [0, {MAX_LOGPROBS}]",
            ),
            (
                self.prompt_logprobs is None or 0 <= self.prompt_logprobs <= MAX_LOGPROBS,
                f"prompt_logprobs: must be in [0, {MAX_LOGPROBS}]",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
