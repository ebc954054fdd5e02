"""Chat templates: turn a message list into the exact prompt text the model was trained on.

Templates come from the model (``tokenizer.chat_template`` in GGUF, ``chat_template`` in
tokenizer_config.json) and are untrusted code, so they run in jinja2's
``ImmutableSandboxedEnvironment`` with the same settings and helpers as Hugging Face's
``apply_chat_template`` (``trim_blocks``, ``lstrip_blocks``, loop controls, ``raise_exception``,
``tojson`` without HTML escaping, ``strftime_now``). Any template error surfaces as ``ValueError``.

The Grok-1 release is a base model without a chat template; when ``template`` is None the plain
transcript format below is used (:data:`PLAIN_TEMPLATE`). Turns are separated by a blank line::

    System: <system text>

    Tools you can call (reply with a JSON object {"name": ..., "arguments": {...}}):
    - <name>: <description> Parameters (JSON schema): <parameters>

    Human: <user text>

    Assistant: <assistant text>

    Assistant: {"name": "<name>", "arguments": <arguments JSON>}
    {"name": "<name>", "arguments": <arguments JSON>}      (parallel calls, one per line)

    Tool (<name>/<tool_call_id>): <tool result>

    Assistant:

Past tool calls are written exactly as the model is constrained to write them
(``engine.structured.specs.GROK1_FORMAT``: a JSON object right after ``Assistant:``), so the base
model sees its own format in the history. The tools section appears only when tools are given
(and without a system message it stands alone). With ``add_generation_prompt`` the text ends in ``"Assistant:"`` and the model continues
after it. A base model does not stop by itself at the end of its turn, so callers should stop on
:data:`PLAIN_STOP_STRINGS` (the next turn's header).

Grok-2 (:data:`GROK2_TEMPLATE`, what ``engine.tiktoken_tokenizer`` hands the engine) has the same
turns, tools text and tool-call format, but closes every turn with ``<|separator|>`` and a blank
line instead of separating them by one::

    System: <system text><|separator|>\n\nHuman: <user text><|separator|>\n\nAssistant:

Its replies end at ``<|separator|>`` (or ``<|eos|>``), which the tokenizer lists as end tokens, so
no stop strings are needed.
"""

from __future__ import annotations

import functools
import json
from datetime import datetime
from typing import Any

import jinja2
from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

PLAIN_STOP_STRINGS = ["\n\nHuman:", "\n\nSystem:", "\n\nTool ("]

_TRANSCRIPT_TURNS = """\
{%- set ns = namespace(parts=[]) -%}
{%- set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | list -%}
{%- set head = system | join('\n\n') -%}
{%- if tools -%}
{%- set tl = namespace(lines=[]) -%}
{%- for t in tools -%}
{%- set f = t.function if t.function is defined else t -%}
{%- set desc = (' ' ~ f.description) if f.description else '' -%}
{%- set params = (' Parameters (JSON schema): ' ~ (f.parameters | tojson)) if f.parameters else '' -%}
{%- set tl.lines = tl.lines + ['- ' ~ f.name ~ ':' ~ desc ~ params] -%}
{%- endfor -%}
{%- set tool_text = 'Tools you can call (reply with a JSON object {"name": ..., "arguments": {...}}):\n'
    ~ (tl.lines | join('\n')) -%}
{%- set head = (head ~ '\n\n' ~ tool_text) if head else tool_text -%}
{%- endif -%}
{%- if system or tools -%}{%- set ns.parts = ns.parts + ['System: ' ~ head] -%}{%- endif -%}
{%- for m in messages if m.role != 'system' -%}
{%- if m.role == 'user' -%}
{%- set ns.parts = ns.parts + ['Human: ' ~ (m.content or '')] -%}
{%- elif m.role == 'assistant' -%}
{%- set turn = namespace(text=('Assistant: ' ~ m.content) if m.content else 'Assistant:') -%}
{%- for c in (m.tool_calls or []) -%}
{%- set f = c.function if c.function is defined else c -%}
{%- set args = f.arguments if f.arguments is string else (f.arguments | tojson) -%}
{%- set sep = '\n' if (m.content or not loop.first) else ' ' -%}
{%- set turn.text = turn.text ~ sep ~ '{"name": ' ~ (f.name | tojson) ~ ', "arguments": ' ~ args ~ '}' -%}
{%- endfor -%}
{%- set ns.parts = ns.parts + [turn.text] -%}
{%- elif m.role == 'tool' -%}
{%- set ns.parts = ns.parts + ['Tool (' ~ (m.name or '') ~ '/' ~ (m.tool_call_id or '') ~ '): ' ~ (m.content or '')] -%}
{%- else -%}
{{ raise_exception('unsupported role ' ~ m.role) }}
{%- endif -%}
{%- endfor -%}"""

PLAIN_TEMPLATE = _TRANSCRIPT_TURNS + """
{%- if add_generation_prompt -%}{%- set ns.parts = ns.parts + ['Assistant:'] -%}{%- endif -%}
{{ ns.parts | join('\n\n') }}"""

# Grok-2's chat format: every turn closed by ``<|separator|>`` and a blank line, the generation
# prompt ``Assistant:`` (the same turns and tool text as the plain format; the reply ends at the
# separator, which the tokenizer lists among its end tokens)
GROK2_TEMPLATE = _TRANSCRIPT_TURNS + """
{%- for p in ns.parts -%}{{ p ~ '<|separator|>\n\n' }}{%- endfor -%}
{%- if add_generation_prompt -%}Assistant:{%- endif -%}"""


class ChatTemplateError(TemplateError):
    """Raised by templates through ``raise_exception`` (e.g. 'roles must alternate')."""


def render_chat(
    messages: list[dict[str, Any]],
    *,
    template: str | None,
    tokenizer: Any = None,
    tools: list[dict[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    **kwargs: Any,
) -> str:
    """Render ``messages`` (OpenAI-style dicts) with ``template`` or the plain Grok-1 format.

    ``bos_token``/``eos_token``/``pad_token`` come from ``tokenizer`` when it has them; extra
    ``kwargs`` (``documents``, ``enable_thinking``, ...) are passed to the template as variables.
    """
    source = PLAIN_TEMPLATE if template is None else template
    compiled = _compile(source)
    context: dict[str, Any] = {**_special_token_strings(tokenizer), **kwargs}
    context.update(
        messages=[_normalise(m) for m in messages],
        tools=tools or None,
        add_generation_prompt=add_generation_prompt,
    )
    try:
        return compiled.render(**context)
    except ChatTemplateError as exc:
        raise ValueError(f"chat template rejected the conversation: {exc}") from exc
    except jinja2.exceptions.SecurityError as exc:
        raise ValueError(f"chat template tried an unsafe operation (blocked by the sandbox): {exc}") from exc
    except (TemplateError, TypeError, AttributeError, KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"chat template failed to render: {type(exc).__name__}: {exc}") from exc


class _StrictSandbox(ImmutableSandboxedEnvironment):
    """Fails loudly on unsafe attribute access instead of rendering it as an empty string."""

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        raise jinja2.exceptions.SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )


@functools.lru_cache(maxsize=16)
def _compile(source: str) -> jinja2.Template:
    """Compile once per template string (compiling costs ~ms, rendering ~µs)."""
    env = _StrictSandbox(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=["jinja2.ext.loopcontrols"],
        keep_trailing_newline=False,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ValueError(f"invalid chat template: {exc}") from exc


def _raise_exception(message: str) -> None:
    raise ChatTemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: Any = None,
    sort_keys: bool = False,
) -> str:
    # Unlike jinja's built-in, no HTML escaping: prompts are not HTML.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _normalise(message: dict[str, Any]) -> dict[str, Any]:
    """Text-only content-part lists (OpenAI's ``[{"type": "text", "text": ...}]``) become one string,
    which is what text-model templates expect."""
    content = message.get("content")
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return {**message, "content": "".join(p.get("text", "") for p in content)}
    return dict(message)


def _special_token_strings(tokenizer: Any) -> dict[str, str]:
    """``bos_token``/``eos_token``/``pad_token`` strings as HF passes them to templates."""
    if tokenizer is None:
        return {}

    def text(token_id: int | None) -> str | None:
        if token_id is None:
            return None
        try:
            return tokenizer.token_bytes(token_id).decode("utf-8", errors="replace")
        except (AttributeError, IndexError):
            return None

    out: dict[str, str] = {}
    eos_ids = list(getattr(tokenizer, "eos_token_ids", None) or [])
    for key, token_id in (
        ("bos_token", getattr(tokenizer, "bos_token_id", None)),
        ("eos_token", eos_ids[0] if eos_ids else None),
        ("pad_token", getattr(tokenizer, "pad_token_id", None)),
    ):
        value = text(token_id)
        if value is not None:
            out[key] = value
    return out
