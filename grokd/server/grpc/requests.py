"""``GetCompletionsRequest`` → the chat request the HTTP API takes.

A gRPC chat request is spelled as the ``/v1/chat/completions`` JSON body it means and validated
by the same pydantic model, so both front ends accept the same values and refuse the rest with
the same messages (a field named as in JSON: ``messages[1].content[0]``, ``max_tokens``).
Optional proto fields the client did not set stay out of the body, so HTTP defaults apply.
xAI's server-side tools, file inputs, multi-agent and guideline settings have no grokd
implementation and are refused by name; ``search_parameters`` is grokd's live search.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from grokd.server.errors import invalid_request, not_supported, validation_error
from grokd.server.grpc.proto import chat_pb2
from grokd.server.protocol import ChatCompletionRequest

ROLES: dict[int, str] = {
    chat_pb2.MessageRole.ROLE_USER: "user",
    chat_pb2.MessageRole.ROLE_ASSISTANT: "assistant",
    chat_pb2.MessageRole.ROLE_SYSTEM: "system",
    chat_pb2.MessageRole.ROLE_DEVELOPER: "developer",
    chat_pb2.MessageRole.ROLE_TOOL: "tool",
    chat_pb2.MessageRole.ROLE_FUNCTION: "tool",
}
TOOL_MODES: dict[int, str] = {
    chat_pb2.ToolMode.TOOL_MODE_AUTO: "auto",
    chat_pb2.ToolMode.TOOL_MODE_NONE: "none",
    chat_pb2.ToolMode.TOOL_MODE_REQUIRED: "required",
}
FORMATS: dict[int, str] = {
    chat_pb2.FormatType.FORMAT_TYPE_TEXT: "text",
    chat_pb2.FormatType.FORMAT_TYPE_JSON_OBJECT: "json_object",
    chat_pb2.FormatType.FORMAT_TYPE_JSON_SCHEMA: "json_schema",
}
SEARCH_MODES: dict[int, str] = {
    chat_pb2.SearchMode.OFF_SEARCH_MODE: "off",
    chat_pb2.SearchMode.ON_SEARCH_MODE: "on",
    chat_pb2.SearchMode.AUTO_SEARCH_MODE: "auto",
}
# Optional scalars copied into the body only when the client set them.
OPTIONAL_SCALARS = ("n", "max_tokens", "seed", "temperature", "top_p", "top_logprobs", "frequency_penalty",
                    "presence_penalty", "parallel_tool_calls")


def _content(msg: Any, i: int) -> str | list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for j, c in enumerate(msg.content):
        kind = c.WhichOneof("content")
        if kind == "text":
            parts.append({"type": "text", "text": c.text})
        elif kind == "image_url":
            parts.append({"type": "image_url", "image_url": {"url": c.image_url.image_url}})
        elif kind == "file":
            raise not_supported(f"messages[{i}].content[{j}]", "file inputs")
        else:
            raise invalid_request(f"messages[{i}].content[{j}]: empty content part", param=f"messages[{i}].content[{j}]")
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def message_dict(msg: Any, i: int) -> dict[str, Any]:
    """One proto ``Message`` as a chat message (reasoning and encrypted content are dropped:
    grokd's models produce neither)."""
    role = ROLES.get(msg.role)
    if role is None:
        raise invalid_request(f"messages[{i}].role: must be set (user, assistant, system, developer or tool)",
                              param=f"messages[{i}].role")
    out: dict[str, Any] = {"role": role, "content": _content(msg, i)}
    if msg.name:
        out["name"] = msg.name
    if msg.tool_calls:
        out["tool_calls"] = [{"id": c.id or None, "type": "function",
                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                             for c in msg.tool_calls]
    if msg.tool_call_id:
        out["tool_call_id"] = msg.tool_call_id
    return out


def _json_field(text: str, param: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise invalid_request(f"{param}: not valid JSON ({exc})", param=param) from None


def tool_dict(tool: Any, i: int) -> dict[str, Any]:
    kind = tool.WhichOneof("tool")
    if kind != "function":
        raise not_supported(f"tools[{i}]", f"the server-side tool `{kind}` (use search_parameters for live search)")
    f = tool.function
    fn: dict[str, Any] = {"name": f.name}
    if f.description:
        fn["description"] = f.description
    if f.parameters:
        fn["parameters"] = _json_field(f.parameters, f"tools[{i}].function.parameters")
    if f.strict:
        fn["strict"] = True
    return {"type": "function", "function": fn}


def tool_choice(choice: Any) -> str | dict[str, Any]:
    if choice.WhichOneof("tool_choice") == "function_name":
        return {"type": "function", "function": {"name": choice.function_name}}
    mode = TOOL_MODES.get(choice.mode)
    if mode is None:
        raise invalid_request("tool_choice.mode: must be auto, none or required", param="tool_choice")
    return mode


def response_format(fmt: Any) -> dict[str, Any]:
    kind = FORMATS.get(fmt.format_type)
    if kind is None:
        raise invalid_request("response_format.format_type: must be text, json_object or json_schema",
                              param="response_format")
    out: dict[str, Any] = {"type": kind}
    if kind == "json_schema":
        if not fmt.HasField("schema"):
            raise invalid_request("response_format.schema: required for FORMAT_TYPE_JSON_SCHEMA",
                                  param="response_format")
        out["json_schema"] = {"name": "response", "schema": _json_field(fmt.schema, "response_format.schema")}
    return out


def _date(ts: Any) -> str:
    return str(ts.ToDatetime().date().isoformat())


def search_parameters(sp: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"mode": SEARCH_MODES.get(sp.mode, "auto"), "return_citations": sp.return_citations}
    sources = []
    for s in sp.sources:
        kind = s.WhichOneof("source")
        if kind is None:
            continue
        fields = {k.name: (list(v) if not isinstance(v, str | int | float | bool) else v)
                  for k, v in getattr(s, kind).ListFields()}
        sources.append({"type": kind, **fields})
    if sources:
        out["sources"] = sources
    if sp.HasField("from_date"):
        out["from_date"] = _date(sp.from_date)
    if sp.HasField("to_date"):
        out["to_date"] = _date(sp.to_date)
    if sp.HasField("max_search_results"):
        out["max_search_results"] = sp.max_search_results
    return out


def _refuse_unsupported(req: Any) -> None:
    if req.HasField("agent_count") and req.agent_count:
        raise not_supported("agent_count", "multi-agent sampling (`agent_count`)")
    if req.guidelines:
        raise not_supported("guidelines", "`guidelines`")
    if req.use_encrypted_content:
        raise not_supported("use_encrypted_content", "encrypted reasoning content (`use_encrypted_content`)")


def chat_body(req: Any) -> dict[str, Any]:
    """The ``/v1/chat/completions`` body a ``GetCompletionsRequest`` means (unvalidated)."""
    _refuse_unsupported(req)
    body: dict[str, Any] = {"model": req.model, "messages": [message_dict(m, i) for i, m in enumerate(req.messages)]}
    for name in OPTIONAL_SCALARS:
        if req.HasField(name):
            body[name] = getattr(req, name)
    if req.user:
        body["user"] = req.user
    if req.stop:
        body["stop"] = list(req.stop)
    if req.logprobs:
        body["logprobs"] = True
    if req.tools:
        body["tools"] = [tool_dict(t, i) for i, t in enumerate(req.tools)]
    if req.HasField("tool_choice"):
        body["tool_choice"] = tool_choice(req.tool_choice)
    if req.HasField("response_format"):
        body["response_format"] = response_format(req.response_format)
    if req.HasField("reasoning_effort"):  # refused exactly as on HTTP (no reasoning model is served)
        body["reasoning_effort"] = chat_pb2.ReasoningEffort.Name(req.reasoning_effort).removeprefix("EFFORT_").lower()
    if req.HasField("search_parameters"):
        body["search_parameters"] = search_parameters(req.search_parameters)
    return body


def chat_request(body: dict[str, Any]) -> ChatCompletionRequest:
    """Validated as the HTTP route validates it (same 400 messages and params)."""
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise validation_error(RequestValidationError(exc.errors())) from None


def to_chat_request(req: Any) -> tuple[dict[str, Any], ChatCompletionRequest]:
    """(the body, for the deferred store; the validated request)."""
    body = chat_body(req)
    return body, chat_request(body)
