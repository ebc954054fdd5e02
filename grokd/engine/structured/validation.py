"""Request fields -> structured spec, with ``ValueError("<field path>: <problem>")`` for anything
invalid, so the server answers 400 naming the field (never 500).

Schemas are checked twice: against the JSON Schema meta-schema (``jsonschema``)
for a precise path, and by compiling with llguidance (no tokenizer needed) for what the backend
does not support. ``StructuredOutputBackend.check`` then compiles against the real tokenizer.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import jsonschema
import llguidance as llg

from grokd.engine.structured.grammars import JSON_OPTIONS, grammar_for, json_schema_grammar
from grokd.engine.structured.specs import (
    HERMES_FORMAT,
    JsonObjectSpec,
    JsonSchemaSpec,
    StructuredSpec,
    ToolCallFormat,
    ToolCallSpec,
    ToolChoiceMode,
)

MAX_TOOLS = 128
# Bounds on a schema before anything recursive (the meta-schema check, grammar building) sees it:
# JSON containers nested at most this deep, at most this many containers and values in all, and
# at most this many JSON objects (subschemas: what the meta-schema check spends its time on,
# about half a millisecond each). The tools of one request share these bounds.
MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_NODES = 20_000
MAX_SCHEMA_OBJECTS = 2_000
_NAME_RE = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_TOOL_CHOICE_STRINGS: dict[str, Literal["none", "auto", "required"]] = {
    "none": "none", "auto": "auto", "required": "required"}


def _path(field: str, parts: Any) -> str:
    out = field
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _check_size(schema: Any, field: str, depth: int = 1) -> None:
    """``ValueError`` for a schema nested deeper than ``MAX_SCHEMA_DEPTH`` or larger than
    ``MAX_SCHEMA_NODES`` values or ``MAX_SCHEMA_OBJECTS`` objects (walked iteratively, so no
    depth can exhaust the stack here)."""
    stack: list[tuple[Any, int]] = [(schema, depth)]
    nodes = objects = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise ValueError(f"{field}: too large (more than {MAX_SCHEMA_NODES} values)")
        if isinstance(value, dict):
            objects += 1
            if objects > MAX_SCHEMA_OBJECTS:
                raise ValueError(f"{field}: too large (more than {MAX_SCHEMA_OBJECTS} JSON objects)")
        if isinstance(value, dict | list):
            if depth > MAX_SCHEMA_DEPTH:
                raise ValueError(f"{field}: nested too deeply (more than {MAX_SCHEMA_DEPTH} levels of "
                                 "JSON objects and arrays)")
            children = value.values() if isinstance(value, dict) else value
            stack.extend((c, depth + 1) for c in children)


def _meta_check(schema: dict[str, Any], field: str) -> None:
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"{_path(field, exc.absolute_path)}: {exc.message}") from None


def _compile_error(grammar: str) -> str | None:
    is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        return (messages[0] if messages else "invalid").strip().splitlines()[0][:500]
    return None


def validate_json_schema(schema: Any, field: str) -> None:
    """A JSON schema the backend can enforce, or ``ValueError`` naming ``field`` (and the path)."""
    if isinstance(schema, bool):
        raise ValueError(f"{field}: boolean schemas are not supported; use an object schema")
    if not isinstance(schema, dict):
        raise ValueError(f"{field}: must be a JSON object (a JSON Schema)")
    _check_size(schema, field)
    _meta_check(schema, field)
    try:
        err = _compile_error(json_schema_grammar(schema))
    except (ValueError, TypeError) as exc:
        err = str(exc)
    if err:
        raise ValueError(f"{field}: not supported by the structured-output backend: {err}")


def validate_tools(tools: Any, field: str = "tools") -> list[dict[str, Any]]:
    """OpenAI function tools, normalised (``parameters`` defaulted to an empty object schema)."""
    if not isinstance(tools, list):
        raise ValueError(f"{field}: must be an array")
    if len(tools) > MAX_TOOLS:
        raise ValueError(f"{field}: at most {MAX_TOOLS} tools are allowed (got {len(tools)})")
    # all the tools' parameters together within one schema's bounds, before any is checked
    _check_size([t.get("function", {}).get("parameters") if isinstance(t, dict) and isinstance(t.get("function"), dict)
                 else None for t in tools], field, depth=0)
    seen: set[str] = set()
    out = []
    for i, tool in enumerate(tools):
        where = f"{field}[{i}]"
        if not isinstance(tool, dict):
            raise ValueError(f"{where}: must be an object")
        if tool.get("type", "function") != "function":
            raise ValueError(f"{where}.type: only 'function' tools are supported (got {tool.get('type')!r})")
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise ValueError(f"{where}.function: must be an object")
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise ValueError(f"{where}.function.name: must be 1-64 characters of a-z, A-Z, 0-9, _ or -")
        if name in seen:
            raise ValueError(f"{where}.function.name: duplicate tool name {name!r}")
        seen.add(name)
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}
        if not isinstance(params, dict):
            raise ValueError(f"{where}.function.parameters: must be a JSON Schema object")
        if params.get("type", "object") != "object":
            raise ValueError(f"{where}.function.parameters.type: must be 'object'")
        validate_json_schema(params, f"{where}.function.parameters")
        out.append({"type": "function", "function": {**fn, "parameters": params}})
    return out


def parse_tool_choice(tool_choice: Any, names: list[str]) -> tuple[ToolChoiceMode | Literal["none"], str | None]:
    """``(mode, name)`` with mode ``none`` | ``auto`` | ``required`` | ``named``."""
    if tool_choice is None:
        return ("auto" if names else "none"), None
    if isinstance(tool_choice, str):
        mode = _TOOL_CHOICE_STRINGS.get(tool_choice)
        if mode is None:
            raise ValueError("tool_choice: must be 'none', 'auto', 'required' or a function object")
        if mode == "required" and not names:
            raise ValueError("tool_choice: 'required' needs at least one tool in tools")
        return mode, None
    if isinstance(tool_choice, dict):
        if tool_choice.get("type") != "function":
            raise ValueError("tool_choice.type: must be 'function'")
        fn = tool_choice.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise ValueError("tool_choice.function.name: required")
        if name not in names:
            raise ValueError(f"tool_choice.function.name: no tool named {name!r} in tools")
        return "named", name
    raise ValueError("tool_choice: must be a string or an object")


def spec_from_request(
    response_format: Any = None,
    tools: Any = None,
    tool_choice: Any = None,
    parallel_tool_calls: bool | None = True,
    tool_format: ToolCallFormat = HERMES_FORMAT,
) -> StructuredSpec | None:
    """The spec for ``SamplingParams.structured`` (None: unconstrained), from the request's
    OpenAI fields as plain dicts. Tools win over ``response_format`` only when a call is forced."""
    tools_list = validate_tools(tools) if tools else []
    names = [t["function"]["name"] for t in tools_list]
    mode, name = parse_tool_choice(tool_choice, names)
    rf_spec = _response_format_spec(response_format)
    if mode != "none" and tools_list:
        if rf_spec is not None and mode == "auto":
            raise ValueError(
                "response_format: cannot be combined with tool_choice 'auto'; use 'none' or 'required'"
            )
        return ToolCallSpec(
            tools=tools_list,
            mode=mode,
            name=name,
            parallel=parallel_tool_calls is not False,
            format=tool_format,
        )
    return rf_spec


def _response_format_spec(rf: Any) -> StructuredSpec | None:
    if rf is None:
        return None
    if not isinstance(rf, dict):
        raise ValueError("response_format: must be an object")
    kind = rf.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return JsonObjectSpec()
    if kind == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict):
            raise ValueError("response_format.json_schema: required for type 'json_schema'")
        schema = js.get("schema", {"type": "object"})
        validate_json_schema(schema, "response_format.json_schema.schema")
        return JsonSchemaSpec(schema=schema, strict=bool(js.get("strict", False)), name=js.get("name"))
    raise ValueError(f"response_format.type: must be 'text', 'json_object' or 'json_schema' (got {kind!r})")


def check_spec(spec: StructuredSpec) -> None:
    """Tokenizer-free compile check of any spec (``ValueError`` naming the field)."""
    err = _compile_error(grammar_for(spec))
    if err:
        field = "tools" if isinstance(spec, ToolCallSpec) else "response_format"
        raise ValueError(f"{field}: not supported by the structured-output backend: {err}")


__all__ = [
    "JSON_OPTIONS",
    "check_spec",
    "parse_tool_choice",
    "spec_from_request",
    "validate_json_schema",
    "validate_tools",
]
