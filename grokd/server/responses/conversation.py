"""Responses input → the generation service's neutral conversation.

``input`` (a string or items), the stored history of ``previous_response_id`` and
``instructions`` become chat-template messages: instructions first (only the new request's, as
OpenAI does), then the earlier turns exactly as the model saw them (so the prefix cache serves
them again), then the new items. Function calls become an assistant message's ``tool_calls``
(consecutive calls share one message), their outputs ``tool`` messages. Flat function tools,
``tool_choice`` and ``text.format`` are translated to the forms the grammar layer takes, and
server-side search tools to live-search settings.
"""

from __future__ import annotations

from typing import Any

from grokd.server.errors import APIError, invalid_request, not_supported
from grokd.server.live import SearchParameters, parse_search_parameters
from grokd.server.protocol import JSONSchemaFormat, ResponseFormat
from grokd.server.registry import ServedModel
from grokd.server.responses.protocol import InputContentPart, InputItem, ResponsesRequest

TEXT_PARTS = frozenset({"input_text", "output_text", "text", "summary_text", "refusal"})
IMAGE_PARTS = frozenset({"input_image", "input_file", "input_audio"})
# Server-side tools and the live-search source each one searches.
SEARCH_TOOLS = {"web_search": "web", "web_search_preview": "web", "x_search": "x"}


def _text_of(parts: str | list[InputContentPart] | None, model: ServedModel, param: str) -> str:
    if parts is None or isinstance(parts, str):
        return parts or ""
    texts: list[str] = []
    for j, part in enumerate(parts):
        if part.type in TEXT_PARTS:
            texts.append(part.text or "")
        elif part.type in IMAGE_PARTS:
            if not model.accepts_images:
                raise invalid_request(
                    f"Model `{model.id}` does not accept {part.type.removeprefix('input_')} inputs "
                    f"(input_modalities: {', '.join(model.input_modalities)}).",
                    param=f"{param}[{j}]", code="unsupported_modality",
                )
            raise not_supported(f"{param}[{j}]", f"`{part.type}` inputs")
        else:
            raise invalid_request(f"Unknown content part type `{part.type}`", param=f"{param}[{j}].type")
    return "\n".join(texts)


def input_messages(items: str | list[InputItem], model: ServedModel) -> list[dict[str, Any]]:
    """Template messages of a request's ``input``."""
    if isinstance(items, str):
        return [{"role": "user", "content": items}]
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        param = f"input[{i}]"
        kind = item.type or ("message" if item.role is not None else None)
        if kind == "message":
            if item.role is None:
                raise invalid_request(f"{param}.role: field required", param=f"{param}.role")
            role = "system" if item.role == "developer" else item.role
            out.append({"role": role, "content": _text_of(item.content, model, f"{param}.content")})
        elif kind == "function_call":
            if not item.call_id or not item.name:
                raise invalid_request(f"{param}: a function_call needs `call_id` and `name`", param=param)
            call = {"id": item.call_id, "type": "function",
                    "function": {"name": item.name, "arguments": item.arguments or "{}"}}
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and last.get("tool_calls") and not last["content"]:
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            if not item.call_id:
                raise invalid_request(f"{param}.call_id: field required", param=f"{param}.call_id")
            out.append({"role": "tool", "tool_call_id": item.call_id,
                        "content": _text_of(item.output, model, f"{param}.output")})
        elif kind == "reasoning":
            continue  # grokd's models do not reason in a separate channel: nothing to show
        elif kind == "item_reference":
            raise not_supported(f"{param}.type", "`item_reference` items (use `previous_response_id`)")
        else:
            raise invalid_request(f"Unknown input item type `{kind}`", param=f"{param}.type")
    return out


def function_tools(req: ResponsesRequest) -> tuple[list[dict[str, Any]] | None, SearchParameters | None]:
    """(function tools in the ``{"type": "function", "function": {...}}`` form, live-search
    settings for the server-side search tools)."""
    tools: list[dict[str, Any]] = []
    sources: list[dict[str, Any]] = []
    for i, tool in enumerate(req.tools or []):
        if tool.type == "function":
            if not tool.name:
                raise invalid_request(f"tools[{i}].name: field required", param=f"tools[{i}].name")
            definition: dict[str, Any] = {"name": tool.name}
            for field in ("description", "parameters", "strict"):
                value = getattr(tool, field)
                if value is not None:
                    definition[field] = value
            tools.append({"type": "function", "function": definition})
        elif tool.type in SEARCH_TOOLS:
            sources.append(_search_source(tool.type, tool.model_extra or {}))
        else:
            raise not_supported(f"tools[{i}].type", f"the `{tool.type}` tool")
    live = None
    if sources:
        try:
            live = parse_search_parameters({"mode": "auto", "sources": sources})
        except ValueError as exc:
            raise invalid_request(str(exc), param="tools") from None
    return tools or None, live


def _search_source(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """A live-search source for a server-side tool: xAI's ``allowed_domains`` /
    ``excluded_domains`` (OpenAI's ``filters.allowed_domains``) and ``allowed_x_handles`` /
    ``excluded_x_handles`` become the source's own filters."""
    source: dict[str, Any] = {"type": SEARCH_TOOLS[kind]}
    if source["type"] == "web":
        filters = options.get("filters")
        allowed = options.get("allowed_domains") or (filters.get("allowed_domains")
                                                      if isinstance(filters, dict) else None)
        if allowed:
            source["allowed_websites"] = allowed
        if options.get("excluded_domains"):
            source["excluded_websites"] = options["excluded_domains"]
    else:
        if options.get("allowed_x_handles"):
            source["included_x_handles"] = options["allowed_x_handles"]
        if options.get("excluded_x_handles"):
            source["excluded_x_handles"] = options["excluded_x_handles"]
    return source


def tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    """``{"type": "function", "name"}`` → chat's ``{"type": "function", "function": {"name"}}``."""
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise invalid_request("tool_choice: must be 'auto', 'none', 'required' or {\"type\": \"function\", "
                          "\"name\": ...}", param="tool_choice")


def response_format(req: ResponsesRequest) -> ResponseFormat | None:
    fmt = req.text.format if req.text is not None else None
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return ResponseFormat(type="json_object")
    return ResponseFormat(type="json_schema", json_schema=JSONSchemaFormat(
        name=fmt.name, schema=fmt.schema_ if fmt.schema_ is not None else {"type": "object"}, strict=fmt.strict))


# The grammar layer names chat's fields; the Responses spelling of the same fields.
_PARAM_NAMES = (
    ("response_format.json_schema.", "text.format."),
    ("response_format", "text.format"),
    (".function.", "."),
    ("search_parameters", "tools"),
)


def wire_error(err: APIError) -> APIError:
    """``err`` with its ``param`` (and the field names in its message) in the Responses spelling."""
    param = err.param
    message = err.message
    for chat, responses in _PARAM_NAMES:
        if param is not None:
            param = param.replace(chat, responses)
        message = message.replace(chat, responses)
    return APIError(err.status, message, type=err.type, code=err.code, param=param, headers=err.headers)
