"""Whole-file validation of a batch input before anything runs.

A batch either starts with every line known good or fails with a per-line error list
(``{"code", "message", "line", "param"}``, lines counted from 1), so a user never pays for half
a batch because line 9,000 had a typo. A body whose strings are not clean text (a lone
surrogate or NUL escape) is not a typo in the file: it passes here and that line alone gets
the HTTP route's 400 in the error file; a ``custom_id`` must be clean text, since it is stored
and echoed in both files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from grokd.server.unicode_check import invalid_text_path

# (url, body) -> [(param or None, message)]; empty when the body is acceptable.
BodyValidator = Callable[[str, dict], list[tuple[str | None, str]]]
ModelExists = Callable[[str], bool]

MAX_REPORTED_ERRORS = 1000


@dataclass
class ValidationResult:
    lines: list[tuple[str, dict]] = field(default_factory=list)  # (custom_id, body) in file order
    errors: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def looks_like_jsonl(data: bytes) -> str | None:
    """Why an uploaded batch file is not JSONL at all (None if it is).

    Per-line mistakes are left for batch validation, which reports them with line numbers; this
    only rejects files that are not JSON Lines in the first place (binary, empty, CSV, ...).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "file is not UTF-8 text"
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            if isinstance(json.loads(raw), dict):
                return None
        except ValueError:
            continue
    return "file is not JSONL: no line is a JSON object"


def structural_body_errors(url: str, body: dict) -> list[tuple[str | None, str]]:
    """Checks every body must pass whatever the protocol models say (batch-specific rules)."""
    errors: list[tuple[str | None, str]] = []
    if not isinstance(body.get("model"), str) or not body.get("model"):
        errors.append(("body.model", "model is required and must be a string"))
    if body.get("stream"):
        errors.append(("body.stream", "streaming is not supported in batch requests"))
    if body.get("deferred"):
        errors.append(("body.deferred", "deferred is not supported in batch requests"))
    if url == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            errors.append(("body.messages", "messages must be a non-empty list"))
    elif url == "/v1/completions" and "prompt" not in body:
        errors.append(("body.prompt", "prompt is required"))
    return errors


def _err(code: str, message: str, line: int | None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "line": line, "param": param}


def validate_batch_file(
    data: bytes,
    endpoint: str,
    body_validator: BodyValidator | None = None,
    model_exists: ModelExists | None = None,
) -> ValidationResult:
    """Parse and check every line of a batch input file against ``endpoint``."""
    result = ValidationResult()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        result.errors.append(_err("invalid_file", "file is not UTF-8 text", None))
        return result
    seen: dict[str, int] = {}
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if len(result.errors) >= MAX_REPORTED_ERRORS:
            break
        if not raw.strip():
            continue
        errors = _check_line(raw, line_no, endpoint, seen, body_validator, model_exists)
        if errors:
            result.errors.extend(errors)
        elif not result.errors:
            obj = json.loads(raw)
            result.lines.append((obj["custom_id"], obj["body"]))
    if not result.lines and not result.errors:
        result.errors.append(_err("empty_file", "the input file has no requests", None))
    if result.errors:
        result.lines = []
    return result


def _check_line(
    raw: str,
    line_no: int,
    endpoint: str,
    seen: dict[str, int],
    body_validator: BodyValidator | None,
    model_exists: ModelExists | None,
) -> list[dict]:
    try:
        obj = json.loads(raw)
    except ValueError as exc:
        return [_err("invalid_json_line", f"line is not valid JSON: {exc}", line_no)]
    if not isinstance(obj, dict):
        return [_err("invalid_json_line", "line must be a JSON object", line_no)]
    errors: list[dict] = []
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        errors.append(_err("invalid_custom_id", "custom_id must be a non-empty string", line_no, "custom_id"))
    elif (bad := invalid_text_path(custom_id)) is not None:
        errors.append(_err("invalid_custom_id", f"custom_id {bad[1]}", line_no, "custom_id"))
    elif custom_id in seen:
        errors.append(
            _err(
                "duplicate_custom_id",
                f"custom_id {custom_id!r} already used on line {seen[custom_id]}",
                line_no,
                "custom_id",
            )
        )
    else:
        seen[custom_id] = line_no
    if obj.get("method", "POST") != "POST":
        errors.append(_err("invalid_method", "method must be POST", line_no, "method"))
    url = obj.get("url")
    if url != endpoint:
        errors.append(
            _err("invalid_url", f"url must be {endpoint!r} (the batch's endpoint), got {url!r}", line_no, "url")
        )
    body = obj.get("body")
    if not isinstance(body, dict):
        errors.append(_err("invalid_body", "body must be a JSON object", line_no, "body"))
        return errors
    problems = structural_body_errors(endpoint, body)
    if not problems and body_validator is not None:
        problems = body_validator(endpoint, body)
    for param, message in problems:
        errors.append(_err("invalid_body", message, line_no, param))
    model = body.get("model")
    if isinstance(model, str) and model and model_exists is not None and not model_exists(model):
        errors.append(_err("model_not_found", f"the model {model!r} does not exist", line_no, "body.model"))
    return errors


def protocol_body_validator(url: str, body: dict) -> list[tuple[str | None, str]]:
    """Validate a line's body with the same pydantic models the HTTP routes use."""
    from pydantic import ValidationError

    from grokd.server.protocol import UNSUPPORTED_FIELDS, ChatCompletionRequest, CompletionRequest

    model = ChatCompletionRequest if url == "/v1/chat/completions" else CompletionRequest
    problems: list[tuple[str | None, str]] = [
        (f"body.{name}", f"{what} is not supported") for name, what in UNSUPPORTED_FIELDS.items() if name in body
    ]
    try:
        model.model_validate(body)
    except ValidationError as exc:
        for err in exc.errors()[:5]:
            loc = ".".join(str(p) for p in err.get("loc", ()) if not any(c in str(p) for c in "[]()"))
            param = f"body.{loc}" if loc else "body"
            problems.append((param, f"{param}: {err.get('msg', 'invalid value')}"))
    return problems
