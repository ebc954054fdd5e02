"""The generation service's vocabulary, free of any wire protocol.

A front end (chat completions, responses, ...) describes a request as a
:class:`ConversationInput` plus :class:`SamplingSettings`; the service turns them into a
:class:`GenerationPlan` (the exact prompt, SamplingParams, grammar, live context) and answers
with a :class:`GenerationResult`, or a stream of :data:`StreamEvent` grouped per engine step.
Front ends only translate their wire format to and from these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from grokd.engine.sampling_params import SamplingParams
from grokd.server.generation.structured import StructuredPlan
from grokd.server.live import LiveResult, SearchParameters
from grokd.server.protocol import ResponseFormat


@dataclass
class SamplingSettings:
    """The sampling knobs of a request, before they are checked into ``SamplingParams``.

    ``engine_fields`` are vLLM/llama.cpp spellings mapped by name onto SamplingParams fields;
    ``sampler_extras`` are parameters of registered samplers (``SamplingParams.extra``)."""

    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    engine_fields: dict[str, Any] = field(default_factory=dict)
    sampler_extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class ConversationInput:
    """One conversation to continue, as the chat template takes it.

    ``messages`` are template dicts (``role``, ``content`` text, ``tool_calls``, ``tool_call_id``);
    ``tools`` are function definitions in the ``{"type": "function", "function": {...}}`` form the
    template and the grammar take; ``tool_choice`` likewise. ``input_param`` and
    ``max_tokens_param`` name the wire fields that errors about the prompt and the token limit
    point at (``messages`` / ``max_tokens`` for chat, ``input`` / ``max_output_tokens`` for
    responses)."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    live: SearchParameters | None = None
    max_tokens: int | None = None
    logprobs: int | None = None  # top-k alternatives per token; None: no logprobs
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None
    input_param: str = "messages"
    max_tokens_param: str = "max_tokens"


@dataclass
class PreparedRequest:
    """A checked request before live context ran: nothing was searched or queued yet, so a
    front end can still hand it to a background job (deferred completions)."""

    conversation: ConversationInput
    settings: SamplingSettings
    model_id: str
    max_model_len: int | None
    structured: StructuredPlan | None
    messages: list[dict[str, Any]]  # with tools spelled out where the template cannot render them
    template_tools: list[dict[str, Any]] | None
    prompt_text: str
    prompt_ids: list[int]


@dataclass
class GenerationPlan:
    """Everything the engine call needs, and what the answer must report."""

    request_id: str
    model_id: str
    prompt_text: str
    prompt_ids: list[int]
    params: SamplingParams
    structured: StructuredPlan | None
    logprobs: int | None
    live: LiveResult | None
    input_param: str = "messages"

    @property
    def citations(self) -> list[str] | None:
        """Live-search citations (xAI reports them when a search ran and succeeded)."""
        if self.live is None:
            return None
        return self.live.citations if self.live.response_fields() else None

    @property
    def sources_used(self) -> int | None:
        return self.live.num_sources_used if self.live is not None and self.live.searched else None

    @property
    def headers(self) -> dict[str, str]:
        return dict(self.live.headers) if self.live is not None else {}


@dataclass
class ToolCallOutput:
    """One function call the model made; ``arguments`` is JSON text valid for the tool's schema."""

    id: str
    name: str
    arguments: str
    index: int = 0


@dataclass
class TopToken:
    token: str
    logprob: float
    bytes: list[int]


@dataclass
class TokenLogprobOutput:
    """A sampled token with its logprob and the top alternatives (text and UTF-8 bytes)."""

    token: str
    logprob: float
    bytes: list[int]
    top: list[TopToken] = field(default_factory=list)
    processed_logprob: float | None = None  # after the sampler chain, when asked for
    processed_top: list[TopToken] | None = None


@dataclass
class ChoiceResult:
    index: int
    content: str | None
    tool_calls: list[ToolCallOutput]
    logprobs: list[TokenLogprobOutput] | None
    finish_reason: str | None  # stop | length | tool_calls
    completion_tokens: int


@dataclass
class GenerationUsage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    sources_used: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class GenerationResult:
    plan: GenerationPlan
    choices: list[ChoiceResult]
    usage: GenerationUsage


# ----------------------------------------------------------------------------- stream events


@dataclass
class TextDelta:
    """New reply text of a choice; ``logprobs`` cover the tokens generated in this step (the
    text may be empty while a tool call's tokens are held back)."""

    index: int
    text: str
    logprobs: list[TokenLogprobOutput] | None = None


@dataclass
class ToolCallDelta:
    """Tool calls completed in this step (each whole, with its position ``index``)."""

    index: int
    calls: list[ToolCallOutput]


@dataclass
class ChoiceFinished:
    index: int
    finish_reason: str  # stop | length | tool_calls


@dataclass
class StreamFinished:
    """After every choice finished: the request's usage."""

    usage: GenerationUsage


StreamEvent = TextDelta | ToolCallDelta | ChoiceFinished | StreamFinished


@dataclass
class StreamStep:
    """The events of one engine step, in order; a front end may merge a choice's events of one
    step into one wire message (chat does: one chunk per choice per step)."""

    events: list[StreamEvent]
