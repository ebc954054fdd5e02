"""Request and response bodies of the OpenAI / xAI protocol (see docs/API.md).

Requests accept unknown fields (``extra="allow"``) the way OpenAI ignores them, but fields that
would change what the model does and that grokd does not implement are rejected with a 400
naming the field (:data:`UNSUPPORTED_FIELDS`), so a client never gets silently wrong output.
Unknown extras that are not known OpenAI/vLLM knobs are handed to the engine as parameters of
registered samplers (``SamplingParams.extra``).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from grokd.engine.sampling_params import MAX_BAD_WORDS, MAX_LOGIT_BIAS, MAX_LOGPROBS, MAX_STOP_TOKEN_IDS

MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
_LIST_LIMITS = {"logit_bias": MAX_LOGIT_BIAS, "bad_words": MAX_BAD_WORDS, "stop_token_ids": MAX_STOP_TOKEN_IDS}

# Fields some clients send that would change the output, and that grokd does not implement.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "functions": "legacy `functions` (use `tools`)",
    "function_call": "legacy `function_call` (use `tool_choice`)",
    "audio": "audio output",
    "prediction": "predicted outputs",
    "web_search_options": "`web_search_options` (use `search_parameters`)",
    "reasoning_effort": "`reasoning_effort` for this model",
    "guided_json": "`guided_json`",
    "guided_regex": "`guided_regex`",
    "guided_choice": "`guided_choice`",
    "guided_grammar": "`guided_grammar`",
    "structured_outputs": "`structured_outputs`",
    "continue_final_message": "`continue_final_message`",
    "use_beam_search": "beam search",
    "length_penalty": "`length_penalty` (beam search)",
    "truncate_prompt_tokens": "`truncate_prompt_tokens`",
    "prompt_logprobs": "`prompt_logprobs` on this endpoint (use echo + logprobs on /v1/completions)",
}

# Extras that are harmless to ignore (metadata, routing hints) and must not reach the sampler.
IGNORED_FIELDS = frozenset(
    {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "modalities", "priority_hint"}
)

# Extras grokd maps to SamplingParams fields by name (vLLM/llama.cpp spellings).
ENGINE_FIELDS = (
    "top_k",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "min_tokens",
    "stop_token_ids",
    "ignore_eos",
    "samplers",
    "bad_words",
    "include_stop_str_in_output",
    "skip_special_tokens",
    "processed_logprobs",
)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


class _Lenient(BaseModel):
    """Nested objects: accept unknown keys (clients send provider-specific ones)."""

    model_config = ConfigDict(extra="allow")


# ----------------------------------------------------------------------------- requests


class StreamOptions(_Lenient):
    include_usage: bool = False


class ImageURL(_Lenient):
    url: str
    detail: str | None = None


class ContentPart(_Lenient):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class FunctionCall(_Lenient):
    name: str
    arguments: str = ""


class ToolCall(_Lenient):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDefinition(_Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(_Lenient):
    """A function tool, or xAI's ``{"type": "live_search", "sources": [...]}`` spelling."""

    # OpenAPI: a function tool (the default type) carries its definition
    model_config = ConfigDict(extra="allow", json_schema_extra={"anyOf": [
        {"required": ["function"], "properties": {"function": {"type": "object"}}},
        {"required": ["type"], "properties": {"type": {"not": {"const": "function"}}}}]})

    type: str = "function"
    function: FunctionDefinition | None = None

    @model_validator(mode="after")
    def _function_needs_definition(self) -> Tool:
        if self.type == "function" and self.function is None:
            raise ValueError("function tools need a `function` definition")
        return self


class JSONSchemaFormat(_Lenient):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None


class SearchSource(_Lenient):
    type: str  # x | web | news | rss | local; checked against the configured sources


class SearchParameters(_Lenient):
    mode: Literal["off", "auto", "on"] = "auto"
    sources: list[SearchSource] | None = None
    from_date: str | None = None
    to_date: str | None = None
    max_search_results: int = Field(default=15, ge=1, le=30)
    return_citations: bool = True


class _SamplerFields(BaseModel):
    """Sampling knobs every generating endpoint accepts (chat, completions, responses): OpenAI's
    plus the engine's extras. Unknown fields stay in ``model_extra`` for registered samplers."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    # the limits are enforced by _bounded (before the entries); documented here for /openapi.json
    logit_bias: dict[str, float] | None = Field(default=None, json_schema_extra={"maxProperties": MAX_LOGIT_BIAS})
    stream: bool = False
    user: str | None = None
    # engine extras
    top_k: int | None = None
    min_p: float | None = None
    typical_p: float | None = None
    repetition_penalty: float | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = Field(default=None, json_schema_extra={"maxItems": MAX_STOP_TOKEN_IDS})
    ignore_eos: bool | None = None
    samplers: list[str] | None = None
    bad_words: list[str] | None = Field(default=None, json_schema_extra={"maxItems": MAX_BAD_WORDS})
    include_stop_str_in_output: bool | None = None
    skip_special_tokens: bool | None = None
    processed_logprobs: bool | None = None  # with logprobs: also the distribution after the samplers

    @field_validator("logit_bias", "bad_words", "stop_token_ids", mode="before")
    @classmethod
    def _bounded(cls, v: Any, info: ValidationInfo) -> Any:
        """Counted before the entries are validated, so a huge list fails fast."""
        limit = _LIST_LIMITS[info.field_name or ""]
        if isinstance(v, dict | list) and len(v) > limit:
            raise ValueError(f"at most {limit} entries are allowed, got {len(v)}")
        return v

    def extra_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# what ``_SamplingRequest._check_stop`` accepts, for the OpenAPI document
_STOP_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                          {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": MAX_STOP_SEQUENCES},
                          {"type": "null"}]}


class _SamplingRequest(_SamplerFields):
    """Fields chat and completions share on top of the sampling knobs."""

    max_tokens: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=128)
    stop: Annotated[str | list[str] | None, WithJsonSchema(_STOP_SCHEMA)] = None
    stream_options: StreamOptions | None = None
    best_of: int | None = Field(default=None, ge=1)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, v: str | list[str] | None) -> str | list[str] | None:
        if isinstance(v, list):
            if len(v) > MAX_STOP_SEQUENCES:
                raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed, got {len(v)}")
            if any(s == "" for s in v):
                raise ValueError("stop sequences must be non-empty")
        elif v == "":
            raise ValueError("stop sequences must be non-empty")
        return v

    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    deferred: bool = False
    search_parameters: SearchParameters | None = None
    # vLLM-style templating knobs
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


# what ``CompletionRequest._check_prompt`` accepts, for the OpenAPI document
_PROMPT_SCHEMA = {"anyOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "string"}, "minItems": 1},
    {"type": "array", "items": {"type": "integer"}, "minItems": 1},
    {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 1}, "minItems": 1}]}


class CompletionRequest(_SamplingRequest):
    prompt: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(_PROMPT_SCHEMA)]
    echo: bool = False
    logprobs: int | None = Field(default=None, ge=0, le=MAX_LOGPROBS)
    suffix: str | None = None
    return_tokens_as_token_ids: bool = False

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("prompt must not be empty")
        if isinstance(v, list) and isinstance(v[0], list) and any(not p for p in v):
            raise ValueError("token-id prompts must not be empty")
        return v


class TokenizeTextRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    text: str


# ----------------------------------------------------------------------------- responses


class PromptTokensDetails(BaseModel):
    """xAI's breakdown: ``text_tokens`` is every prompt token (text-only models), the rest 0."""

    text_tokens: int | None = None  # filled with prompt_tokens by Usage
    audio_tokens: int = 0
    image_tokens: int = 0
    cached_tokens: int = 0


class CompletionTokensDetails(BaseModel):
    reasoning_tokens: int = 0
    audio_tokens: int = 0
    accepted_prediction_tokens: int = 0
    rejected_prediction_tokens: int = 0


class _DropNone(BaseModel):
    """Serialises without the listed optional keys when they are None (OpenAI omits them)."""

    _omit_if_none: tuple[str, ...] = ()

    @model_serializer(mode="wrap")
    def _drop_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for key in self._omit_if_none:
            if data.get(key) is None:
                data.pop(key, None)
        return data


class Usage(_DropNone):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails = Field(default_factory=CompletionTokensDetails)
    num_sources_used: int | None = None
    _omit_if_none = ("num_sources_used",)

    @model_validator(mode="after")
    def _text_tokens(self) -> Usage:
        details = self.prompt_tokens_details
        if details is not None and details.text_tokens is None:
            details.text_tokens = self.prompt_tokens
        return self


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class ChatTokenLogprob(TopLogprob, _DropNone):
    """OpenAI's token entry; ``processed_logprob`` / ``processed_top_logprobs`` (grokd's extension,
    sent only when the request set ``processed_logprobs``) are the same after the sampler chain."""

    top_logprobs: list[TopLogprob] = Field(default_factory=list)
    processed_logprob: float | None = None
    processed_top_logprobs: list[TopLogprob] | None = None
    _omit_if_none = ("processed_logprob", "processed_top_logprobs")


class ChoiceLogprobs(BaseModel):
    content: list[ChatTokenLogprob] | None = None


class ChatResponseMessage(_DropNone):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    _omit_if_none = ("tool_calls",)


class ChatChoice(BaseModel):
    index: int
    message: ChatResponseMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(_DropNone):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None
    citations: list[str] | None = None
    _omit_if_none = ("citations",)


class ChatDelta(_DropNone):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    _omit_if_none = ("role", "content", "tool_calls")


class ChatChunkChoice(BaseModel):
    index: int
    delta: ChatDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_DropNone):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
    citations: list[str] | None = None
    _omit_if_none = ("citations",)


class CompletionLogprobs(BaseModel):
    """OpenAI's legacy completions logprobs: parallel arrays over tokens."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float | None] = Field(default_factory=list)
    top_logprobs: list[dict[str, float] | None] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    aliases: list[str] = Field(default_factory=list)
    context_length: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class LanguageModel(BaseModel):
    id: str
    fingerprint: str
    created: int
    object: Literal["model"] = "model"
    owned_by: str
    version: str
    input_modalities: list[str]
    output_modalities: list[str]
    prompt_text_token_price: int = 0
    cached_prompt_text_token_price: int = 0
    prompt_image_token_price: int = 0
    completion_text_token_price: int = 0
    search_price: int = 0
    aliases: list[str]
    max_model_len: int | None = None


class LanguageModelList(BaseModel):
    models: list[LanguageModel]


class TokenInfo(BaseModel):
    token_id: int
    string_token: str
    token_bytes: list[int]


class TokenizeTextResponse(BaseModel):
    token_ids: list[TokenInfo]


class ApiKeyInfo(BaseModel):
    redacted_api_key: str
    user_id: str
    name: str
    create_time: str
    modify_time: str
    modified_by: str
    team_id: str
    acls: list[str]
    api_key_id: str
    team_blocked: bool = False
    api_key_blocked: bool = False
    api_key_disabled: bool = False
