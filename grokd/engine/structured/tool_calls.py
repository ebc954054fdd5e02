"""Constrained output -> OpenAI ``tool_calls`` (and ``content`` for ``auto`` text).

The grammar guarantees the shape, so parsing is exact: find where calls start (the format's
trigger), decode consecutive ``{"name", "arguments"}`` objects, skip the literal tags between
them. A call cut short (``finish_reason: length`` with no budget) is dropped, never half-parsed.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from grokd.engine.structured.specs import ToolCallFormat

_DECODER = json.JSONDecoder()


def new_call_id() -> str:
    """``call_`` + 24 hex digits, like OpenAI's ids."""
    return "call_" + secrets.token_hex(12)


@dataclass
class ParsedOutput:
    """``content`` is the text before the first call (None when empty); ``tool_calls`` are OpenAI
    dicts ``{"id", "type": "function", "function": {"name", "arguments": "<json>"}}``."""

    content: str | None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finish_reason(self) -> str | None:
        """``tool_calls`` when calls were made, else None (keep the engine's reason)."""
        return "tool_calls" if self.tool_calls else None


def find_calls_start(text: str, fmt: ToolCallFormat) -> int:
    """Index where the first call begins (at its trigger), or -1 for plain text."""
    if fmt.trigger_anywhere:
        return text.find(fmt.trigger)
    stripped = text.lstrip()
    return len(text) - len(stripped) if stripped.startswith(fmt.trigger) else -1


def _skip(text: str, pos: int, literals: list[str]) -> int:
    """Advance past whitespace and any of ``literals`` (tags between calls)."""
    moved = True
    while moved and pos < len(text):
        moved = False
        while pos < len(text) and text[pos].isspace():
            pos, moved = pos + 1, True
        for lit in literals:
            if lit and text.startswith(lit, pos):
                pos, moved = pos + len(lit), True
    return pos


def to_tool_call(obj: dict[str, Any], call_id: str | None = None) -> dict[str, Any]:
    return {
        "id": call_id or new_call_id(),
        "type": "function",
        "function": {"name": obj["name"], "arguments": json.dumps(obj["arguments"], ensure_ascii=False)},
    }


def parse_calls_from(text: str, start: int, fmt: ToolCallFormat) -> tuple[list[dict[str, Any]], int]:
    """Complete call objects from ``start``; returns them and the index after the last one."""
    tags = [
        t.strip() for t in (fmt.begin, fmt.end, fmt.separator, fmt.trigger) if t.strip() and t.strip() != "{"
    ]
    calls: list[dict[str, Any]] = []
    pos = start
    while True:
        at = _skip(text, pos, tags)
        if at >= len(text) or text[at] != "{":
            return calls, pos
        try:
            obj, end = _DECODER.raw_decode(text, at)
        except json.JSONDecodeError:
            return calls, pos
        if not (
            isinstance(obj, dict)
            and isinstance(obj.get("name"), str)
            and isinstance(obj.get("arguments"), dict)
        ):
            return calls, pos
        calls.append(to_tool_call(obj))
        pos = end
        if fmt.end.strip() and text.startswith(fmt.end.strip(), _skip(text, pos, [])):
            pos = _skip(text, pos, []) + len(fmt.end.strip())


def _key(call: dict[str, Any]) -> tuple[str, str]:
    return call["function"]["name"], call["function"]["arguments"]


def parse_tool_output(text: str, fmt: ToolCallFormat) -> ParsedOutput:
    """Split a finished reply into content and tool calls."""
    start = find_calls_start(text, fmt)
    if start < 0:
        return ParsedOutput(content=text)
    calls, _ = parse_calls_from(text, start, fmt)
    if not calls:
        return ParsedOutput(content=text)
    unique: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()  # small models repeat a call verbatim; once is what they mean
    for call in calls:
        if _key(call) not in seen:
            seen.add(_key(call))
            unique.append(call)
    calls = unique
    content = text[:start].strip()
    return ParsedOutput(content=content or None, tool_calls=calls)


class ToolCallStreamer:
    """Incremental version for SSE: feed cumulative-text deltas, get content deltas and whole calls.

    Text that might still turn out to be the start of a trigger is held back; each call is
    emitted once its object is complete (``index`` counts calls in this reply)."""

    def __init__(self, fmt: ToolCallFormat) -> None:
        self.fmt = fmt
        self.text = ""
        self._sent_content = 0
        self._calls_start = -1
        self._calls_parsed = 0
        self._emitted: set[tuple[str, str]] = set()

    def feed(self, delta: str, final: bool = False) -> tuple[str, list[dict[str, Any]]]:
        """Returns ``(content_delta, new_calls)``; each new call carries its ``index``."""
        self.text += delta
        if self._calls_start < 0:
            self._calls_start = find_calls_start(self.text, self.fmt)
        if self._calls_start < 0:
            safe = len(self.text) if final else self._safe_end()
            out = self.text[self._sent_content : safe]
            self._sent_content = max(self._sent_content, safe)
            return out, []
        content = self.text[self._sent_content : self._calls_start]
        if not self._sent_content:
            content = content.rstrip() if content.strip() else ""
        self._sent_content = max(self._sent_content, self._calls_start)
        calls, _ = parse_calls_from(self.text, self._calls_start, self.fmt)
        new = []
        for call in calls[self._calls_parsed :]:
            if _key(call) not in self._emitted:  # same dedupe as parse_tool_output
                self._emitted.add(_key(call))
                new.append({**call, "index": len(self._emitted) - 1})
        self._calls_parsed = len(calls)
        return content, new

    def _safe_end(self) -> int:
        """End of the text that cannot be the beginning of a trigger."""
        trig = self.fmt.trigger
        if not self.fmt.trigger_anywhere:
            return len(self.text) if self.text.strip() else 0  # undecided until the first real char
        for k in range(min(len(trig) - 1, len(self.text)), 0, -1):
            if trig.startswith(self.text[-k:]):
                return len(self.text) - k
        return len(self.text)
