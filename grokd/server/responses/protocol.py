"""Wire models of the Responses API (xAI's, OpenAI-compatible; see docs/API.md).

Requests are lenient like chat's (unknown fields are sampler parameters or ignored metadata);
fields that would change the output and that grokd does not implement answer 400 naming the
field. Response models serialise to the shapes openai-python's ``openai.types.responses``
parses (``Response``, its output items and stream events).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from grokd.server.protocol import IGNORED_FIELDS, MAX_TOOLS, _DropNone, _Lenient, _SamplerFields

MAX_TOP_LOGPROBS = 8
# Extras of a responses body that are metadata or routing hints, never sampler parameters.
RESPONSES_IGNORED_FIELDS = IGNORED_FIELDS | {
    "include", "reasoning", "truncation", "prompt_cache_key", "safety_identifier", "background",
    "stream_options", "max_tool_calls", "prompt",
}
# Fields some clients send that would change the output, and that grokd does not implement here.
RESPONSES_UNSUPPORTED_FIELDS: dict[str, str] = {
    "background": "background responses",
    "conversation": "`conversation` objects (use `previous_response_id`)",
    "prompt": "prompt templates (`prompt`)",
    "max_tool_calls": "`max_tool_calls`",
}

# ----------------------------------------------------------------------------- requests


class InputContentPart(_Lenient):
    """``input_text`` / ``output_text`` (text), ``input_image`` / ``input_file`` (refused on
    text-only models)."""

    type: str
    text: str | None = None


class InputItem(_Lenient):
    """One conversation item: a message (``type`` ``message`` or absent), ``function_call``,
    ``function_call_output`` or ``reasoning`` (accepted, not shown to the model)."""

    type: str | None = None
    role: Literal["system", "developer", "user", "assistant"] | None = None
    content: str | list[InputContentPart] | None = None
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputContentPart] | None = None
    status: str | None = None


class ResponseTool(_Lenient):
    """``{"type": "function", "name", "description", "parameters", "strict"}`` (the flat form) or
    a server-side tool (``web_search``, ``x_search``)."""

    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class TextFormatConfig(_Lenient):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextConfig(_Lenient):
    format: TextFormatConfig | None = None
    verbosity: str | None = None


class ReasoningConfig(_Lenient):
    effort: str | None = None
    summary: str | None = None
    generate_summary: str | None = None


class ResponsesRequest(_SamplerFields):
    input: str | list[InputItem]
    instructions: str | None = None
    previous_response_id: str | None = None
    store: bool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=MAX_TOP_LOGPROBS)
    text: TextConfig | None = None
    tools: list[ResponseTool] | None = Field(default=None, max_length=MAX_TOOLS)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    reasoning: ReasoningConfig | None = None
    include: list[str] | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    truncation: str | None = None


# ----------------------------------------------------------------------------- responses


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class LogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut] = Field(default_factory=list)


class URLCitation(BaseModel):
    type: Literal["url_citation"] = "url_citation"
    url: str
    title: str
    start_index: int = 0
    end_index: int = 0


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[URLCitation] = Field(default_factory=list)
    logprobs: list[LogprobOut] = Field(default_factory=list)


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"] = "completed"
    content: list[OutputText] = Field(default_factory=list)


class FunctionCallItem(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Literal["in_progress", "completed", "incomplete"] = "completed"


class SearchAction(BaseModel):
    type: Literal["search"] = "search"
    query: str


class SearchCallItem(BaseModel):
    """A server-side search the answer used (``web_search_call`` / ``x_search_call``)."""

    id: str
    type: Literal["web_search_call", "x_search_call"]
    status: Literal["completed", "failed"] = "completed"
    action: SearchAction


OutputItem = OutputMessage | FunctionCallItem | SearchCallItem


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = Field(default_factory=OutputTokensDetails)
    total_tokens: int
    num_sources_used: int = 0
    num_server_side_tools_used: int = 0


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseErrorInfo(BaseModel):
    code: str
    message: str


class ResponseObject(_DropNone):
    id: str
    object: Literal["response"] = "response"
    created_at: int
    model: str
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseErrorInfo | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    output: list[OutputItem] = Field(default_factory=list)
    usage: ResponseUsage | None = None
    previous_response_id: str | None = None
    store: bool = True
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    max_output_tokens: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    parallel_tool_calls: bool = True
    reasoning: dict[str, Any] | None = None
    user: str | None = None
    service_tier: str | None = None
    truncation: str = "disabled"
    background: bool = False
    citations: list[str] | None = None
    _omit_if_none = ("citations",)


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True
