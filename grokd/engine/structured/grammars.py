"""Spec -> llguidance grammar text. Pure functions: the grammar text is also the cache key.

JSON is emitted without free whitespace (``", "`` and ``": "`` separators only): a random or weak
model cannot spend its token budget on indentation, and the output is still ordinary JSON.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import llguidance as llg

from grokd.engine.structured.specs import JsonObjectSpec, JsonSchemaSpec, StructuredSpec, ToolCallSpec

if TYPE_CHECKING:  # a TypedDict of llguidance's stubs only
    from llguidance._lib import JsonCompileOptions

JSON_OPTIONS: JsonCompileOptions = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
    "lenient": False,
}
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


def json_schema_grammar(schema: dict[str, Any]) -> str:
    return llg.LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_OPTIONS)


def _lark_str(s: str) -> str:
    """A lark string literal (nothing for the empty string, which lark cannot spell)."""
    return json.dumps(s) if s else ""


def _lark_regex_literal(s: str) -> str:
    """``s`` as a lark ``/regex/`` body matching itself literally."""
    return "".join(_rx_char(c) for c in s)


def _rx_char(c: str) -> str:
    if c.isalnum() or c == "_":
        return c
    if c == "\n":
        return "\\n"
    if c in "\\]^-[":
        return "[\\" + c + "]"
    if c == "/":
        return "\\/"
    return f"[{c}]"


def _has_ref(node: Any) -> bool:
    if isinstance(node, dict):
        return "$ref" in node or any(_has_ref(v) for v in node.values())
    return isinstance(node, list) and any(_has_ref(v) for v in node)


def _relocate(node: Any, base: str) -> Any:
    """Copy of ``node`` with local ``$ref``s (``#``, ``#/...``) re-rooted under pointer ``base``."""
    if isinstance(node, dict):
        out = {k: _relocate(v, base) for k, v in node.items()}
        ref = node.get("$ref")
        if isinstance(ref, str) and (ref == "#" or ref.startswith("#/")):
            out["$ref"] = base + ref[1:]
        return out
    if isinstance(node, list):
        return [_relocate(v, base) for v in node]
    return node


def call_schema(spec: ToolCallSpec) -> dict[str, Any]:
    """JSON schema of one call object ``{"name": ..., "arguments": {...}}`` over the allowed tools.

    Each tool's parameters become a subschema of this wrapper, so ``$ref``s written against the
    parameters' own root (``#/$defs/...``, as pydantic emits) are re-rooted under
    ``#/$defs/tool<i>`` where the parameters are stored."""
    options = []
    defs: dict[str, Any] = {}
    for i, tool in enumerate(spec.tools):
        fn = tool["function"]
        if spec.mode == "named" and fn["name"] != spec.name:
            continue
        params = fn.get("parameters") or EMPTY_PARAMETERS
        if _has_ref(params):
            defs[f"tool{i}"] = _relocate(params, f"#/$defs/tool{i}")
            params = {"$ref": f"#/$defs/tool{i}"}
        options.append(
            {
                "type": "object",
                "properties": {"name": {"const": fn["name"]}, "arguments": params},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if not options:
        raise ValueError(f"tool_choice.function.name: no tool named {spec.name!r}")
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    return {**schema, "$defs": defs} if defs else schema


def tool_call_lark(spec: ToolCallSpec) -> str:
    fmt = spec.format
    schema = {"x-guidance": dict(JSON_OPTIONS), **call_schema(spec)}
    body = f"%json {json.dumps(schema)}"
    between = fmt.separator + (fmt.begin if fmt.trigger_anywhere else "")
    more = f"({_lark_str(between)} call_body)*" if spec.parallel else ""
    lines = ["%llguidance {}", f"call_body: {body} {_lark_str(fmt.end)}"]
    if spec.mode == "auto" and fmt.trigger_anywhere:
        rest = fmt.begin[len(fmt.trigger) :]
        lines += [
            "start: TEXT | calls",
            "TEXT: /(.|\\n)*/",
            f"prefix[lazy]: /(.|\\n)*{_lark_regex_literal(fmt.trigger)}/",
            f"calls: prefix {_lark_str(rest)} call_body {more}",
        ]
    elif spec.mode == "auto":  # a call only at the very start; text must not look like one
        lead = _lark_regex_literal(fmt.begin.strip(" ")) if fmt.begin.strip(" ") else ""
        lines += [
            "start: TEXT | calls",
            f"TEXT: /(.|\\n)*/ & ~/[ ]*{lead}{_lark_regex_literal(fmt.trigger)}(.|\\n)*/",
            f"calls: {_lark_str(fmt.begin)} call_body {more}",
        ]
    else:
        lines += [f"start: {_lark_str(fmt.begin)} call_body {more}"]
    return "\n".join(lines) + "\n"


def grammar_for(spec: StructuredSpec) -> str:
    """The llguidance grammar text of a spec (also its compile-cache key)."""
    if isinstance(spec, JsonSchemaSpec):
        return json_schema_grammar(spec.schema)
    if isinstance(spec, JsonObjectSpec):
        return json_schema_grammar({"type": "object"})
    if isinstance(spec, ToolCallSpec):
        return llg.LLMatcher.grammar_from_lark(tool_call_lark(spec))
    raise TypeError(f"structured: unsupported spec type {type(spec).__name__}")
