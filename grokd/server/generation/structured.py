"""The generation service's bridge to structured outputs (engine.structured): a response format
and ``tools`` / ``tool_choice`` become a grammar spec in ``SamplingParams.structured``; a
constrained reply is turned back into tool calls. Invalid definitions answer 400 naming the
field, never silently unconstrained output.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from grokd.engine.async_engine import ModelInfo
from grokd.engine.structured.prompting import inject_tools, template_supports_tools
from grokd.engine.structured.specs import StructuredSpec, ToolCallFormat, ToolCallSpec, tool_call_format_for
from grokd.engine.structured.tool_calls import ToolCallStreamer, parse_tool_output
from grokd.engine.structured.validation import spec_from_request
from grokd.server.errors import from_value_error, invalid_request
from grokd.server.protocol import ResponseFormat

# Seconds checking a request's schemas (meta-schema, grammar compile) may take. The size bounds in
# engine.structured.validation keep the worst case to a few seconds of one core; the deadline
# answers the client even on a box too loaded to get there.
SCHEMA_CHECK_TIMEOUT_S = 10.0


@dataclass
class StructuredPlan:
    spec: StructuredSpec  # for SamplingParams.structured
    tool_format: ToolCallFormat | None  # when the reply may hold tool calls


def plan(response_format: ResponseFormat | None, tools: list[dict[str, Any]] | None,
         tool_choice: str | dict[str, Any] | None, parallel_tool_calls: bool | None,
         model_info: ModelInfo) -> StructuredPlan | None:
    """The spec for this request (None: unconstrained); invalid definitions are a 400 naming the field."""
    wants_format = response_format is not None and response_format.type != "text"
    if not wants_format and not (tools and tool_choice != "none"):
        return None
    fmt = tool_call_format_for(model_info.architecture)
    try:
        spec = spec_from_request(
            response_format=response_format.model_dump(by_alias=True, exclude_none=True)
            if response_format is not None else None,
            tools=tools or None,
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            tool_format=fmt,
        )
    except ValueError as exc:
        raise from_value_error(exc, default_param="tools" if tools else "response_format") from None
    if spec is None:
        return None
    return StructuredPlan(spec, fmt if isinstance(spec, ToolCallSpec) else None)


async def plan_off_loop(response_format: ResponseFormat | None, tools: list[dict[str, Any]] | None,
                        tool_choice: str | dict[str, Any] | None, parallel_tool_calls: bool | None,
                        model_info: ModelInfo, timeout_s: float = SCHEMA_CHECK_TIMEOUT_S) -> StructuredPlan | None:
    """:func:`plan` in a worker thread, so a large schema never stalls the event loop (and every
    stream on it); past ``timeout_s`` the request gets a 400 (the check itself runs on, bounded
    by the size limits, and its result is dropped)."""
    if (response_format is None or response_format.type == "text") and not (tools and tool_choice != "none"):
        return None
    work = asyncio.to_thread(plan, response_format, tools, tool_choice, parallel_tool_calls, model_info)
    try:
        return await asyncio.wait_for(work, timeout_s)
    except TimeoutError:
        param = "tools" if tools else "response_format"
        raise invalid_request(f"{param}: checking the schema took longer than {timeout_s:g} seconds; simplify it",
                              param=param, code="schema_too_complex") from None


def prepare_messages(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, model_info: ModelInfo,
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools for the template). A template that cannot render tools gets them, and
    earlier calls and results, spelled out as text in the format the grammar enforces."""
    tool_dicts = tools or None
    history = any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
    if not tool_dicts and not history:
        return messages, None
    if template_supports_tools(model_info.chat_template):
        return messages, tool_dicts
    fmt = tool_call_format_for(model_info.architecture)
    return inject_tools(messages, tool_dicts, fmt), None


def parse_reply(plan: StructuredPlan | None, text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of a finished reply."""
    if plan is None or plan.tool_format is None:
        return text, []
    parsed = parse_tool_output(text, plan.tool_format)
    return parsed.content, parsed.tool_calls


class ReplyStreamer:
    """Per-choice streaming split into content deltas and whole tool calls (with ``index``)."""

    def __init__(self, plan: StructuredPlan | None) -> None:
        self._inner: ToolCallStreamer | None = None
        if plan is not None and plan.tool_format is not None:
            self._inner = ToolCallStreamer(plan.tool_format)
        self.made_calls = False

    def feed(self, delta: str, final: bool) -> tuple[str, list[dict[str, Any]]]:
        if self._inner is None:
            return delta, []
        content, calls = self._inner.feed(delta, final=final)
        self.made_calls = self.made_calls or bool(calls)
        return content, calls
