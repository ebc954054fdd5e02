"""Tool prompting for chat templates that know nothing about tools (SmolLM2's is plain ChatML).

Such a template drops ``tools`` and cannot render assistant ``tool_calls``, so the model would
never see the tool list nor its own earlier calls. ``inject_tools`` rewrites the conversation into
plain messages the template can render, in the same ``hermes`` format the grammar enforces:

- a system message (merged with an existing one) lists the tools as JSON inside ``<tools>`` and
  shows the exact call syntax;
- an assistant turn with ``tool_calls`` becomes text: its content followed by one
  ``<tool_call>...</tool_call>`` block per call;
- a ``tool`` result keeps its role and plain content (SmolLM2 was not trained on
  ``<tool_response>`` tags and echoes them; with plain content it answers from the result).

Templates that reference ``tools`` themselves are left alone (``template_supports_tools``).
"""

from __future__ import annotations

import json
from typing import Any

from grokd.engine.structured.specs import HERMES_FORMAT, ToolCallFormat


def template_supports_tools(template: str | None) -> bool:
    """Whether a jinja chat template renders ``tools`` itself (None = the built-in Grok-1 format)."""
    return template is None or "tools" in template


def tools_system_text(tools: list[dict[str, Any]], fmt: ToolCallFormat = HERMES_FORMAT) -> str:
    lines = [
        "You can call functions. Their signatures are in <tools></tools>:",
        "<tools>",
        *(json.dumps(t.get("function", t), ensure_ascii=False) for t in tools),
        "</tools>",
        "To call a function, reply with one block per call, exactly like this:",
        fmt.render("<function-name>", "<arguments-json-object>"),
        "Otherwise answer in plain text.",
    ]
    return "\n".join(lines)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")


def inject_tools(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None, fmt: ToolCallFormat = HERMES_FORMAT
) -> list[dict[str, Any]]:
    """Messages with tools, calls and results spelled out as text (see the module docstring)."""
    out: list[dict[str, Any]] = []
    if tools:
        system = tools_system_text(tools, fmt)
        if messages and messages[0].get("role") == "system":
            system = _content_text(messages[0].get("content")) + "\n\n" + system
            messages = messages[1:]
        out.append({"role": "system", "content": system})
    for m in messages:
        role = m.get("role")
        if role == "assistant" and m.get("tool_calls"):
            parts = [_content_text(m.get("content"))] if m.get("content") else []
            for call in m["tool_calls"]:
                fn = call.get("function", {})
                args = fn.get("arguments", "{}")
                parts.append(
                    fmt.render(fn.get("name", ""), args if isinstance(args, str) else json.dumps(args))
                )
            out.append({"role": "assistant", "content": fmt.separator.join(parts)})
        elif role == "tool":
            body = _content_text(m.get("content"))
            out.append({"role": "tool", "content": body})
        else:
            out.append(dict(m))
    return out
