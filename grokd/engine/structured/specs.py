"""What the server puts into ``SamplingParams.structured``, and the tool-call text formats.

Specs are plain data: the server builds them from ``response_format`` / ``tools`` /
``tool_choice`` (see ``engine.structured.validation.spec_from_request``), the engine's structured
backend compiles them into a grammar against the model's tokenizer.

Tool-call formats (what the chat template teaches the model and what the grammar enforces):

- ``hermes`` (SmolLM2 and other ChatML models; the ``<tool_call>`` convention of Hermes/Qwen/
  SmolLM chat templates)::

      <tool_call>
      {"name": "get_weather", "arguments": {"city": "Paris"}}
      </tool_call>

  Parallel calls are such blocks separated by one newline.

- ``grok1`` (the Grok-1 base model has no tool-calling training; its plain prompt format in
  ``engine.chat_template`` lists the tools and asks for a JSON object, which the grammar then
  guarantees). After ``Assistant:`` the reply is one space and the call object; parallel calls
  are further objects, one per line::

      Assistant: {"name": "get_weather", "arguments": {"city": "Paris"}}

In ``auto`` mode the model writes free text; for ``hermes`` the moment it writes the trigger
``<tool_call>`` (anywhere) the rest is constrained to calls and the text before it becomes
``content``; for ``grok1`` a reply that starts with ``{`` is a call, any other reply is text.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

ToolChoiceMode = Literal["required", "named", "auto"]


@dataclass(frozen=True)
class ToolCallFormat:
    """The literal text around calls. ``trigger`` is what switches ``auto`` mode from text to calls:
    anywhere in the text when ``trigger_anywhere``, else only as the reply's first non-space text
    (then ``begin`` is what precedes the first call, e.g. a space)."""

    name: str
    begin: str
    end: str
    separator: str
    trigger: str
    trigger_anywhere: bool = True

    def render(self, name: str, arguments_json: str) -> str:
        """One call as the model writes it (used by chat templates for assistant history)."""
        return f'{self.begin}{{"name": {_json_str(name)}, "arguments": {arguments_json}}}{self.end}'


def _json_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


HERMES_FORMAT = ToolCallFormat(
    name="hermes", begin="<tool_call>\n", end="\n</tool_call>", separator="\n", trigger="<tool_call>"
)
GROK1_FORMAT = ToolCallFormat(
    name="grok1", begin=" ", end="", separator="\n", trigger="{", trigger_anywhere=False
)
TOOL_CALL_FORMATS: dict[str, ToolCallFormat] = {f.name: f for f in (HERMES_FORMAT, GROK1_FORMAT)}


def tool_call_format_for(model_type: str | None) -> ToolCallFormat:
    """The format a model family uses: Grok checkpoints get ``grok1``, everything else ``hermes``."""
    if model_type and model_type.lower().replace("_", "-").startswith("grok"):
        return GROK1_FORMAT
    return HERMES_FORMAT


@dataclass(frozen=True)
class JsonSchemaSpec:
    """``response_format: json_schema``. The output always parses and validates against ``schema``
    (``strict`` is recorded for the response but the grammar is enforced either way)."""

    schema: dict[str, Any]
    strict: bool = False
    name: str | None = None


@dataclass(frozen=True)
class JsonObjectSpec:
    """``response_format: json_object``: any JSON object."""


@dataclass(frozen=True)
class ToolCallSpec:
    """``tools`` + ``tool_choice`` other than ``none``.

    ``tools`` are OpenAI function tools (``{"type": "function", "function": {name, parameters}}``),
    already validated. ``mode``: ``required`` (one or more calls of any tool), ``named`` (calls of
    ``name`` only), ``auto`` (free text, or calls once the trigger appears). ``parallel`` allows
    more than one call.
    """

    tools: list[dict[str, Any]]
    mode: ToolChoiceMode = "auto"
    name: str | None = None
    parallel: bool = True
    format: ToolCallFormat = field(default=HERMES_FORMAT)

    def function_names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools]


StructuredSpec = JsonSchemaSpec | JsonObjectSpec | ToolCallSpec
