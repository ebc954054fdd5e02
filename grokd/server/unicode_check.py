"""Rejecting JSON bodies whose strings are not Unicode text, or hold NUL.

Three ways a body can carry what is not text, each refused with a 400 naming the problem:

- UTF-8-encoded surrogates (``\\xed\\xa0\\x80``): Python's ``json.loads`` decodes bytes with
  ``surrogatepass``, so they would come through as a lone surrogate; :func:`utf8_error` decodes
  strictly and says where it fails (other invalid UTF-8 never gets this far: the JSON parse
  refuses it, and ``server.errors`` says where);
- JSON's ``\\uXXXX`` escapes spelling half of a UTF-16 surrogate pair (``"\\ud800"``): valid
  JSON, but no tokenizer, UTF-8 log or SQLite column can encode it;
- ``"\\u0000"``: valid Unicode, but C strings (SQLite's text API, logs, tokenizers) end at it,
  so a NUL would be cut or misread somewhere downstream.

The escape check runs only on a body holding ``\\u`` (the only way JSON spells either), as one
C-speed re-encode of the parsed body; only a body that fails it is walked to find the path.
"""

from __future__ import annotations

import json
from typing import Any


def utf8_error(raw: bytes) -> str | None:
    """Why ``raw`` is not strict UTF-8 (with the byte offset), or ``None`` when it is."""
    try:
        raw.decode("utf-8")
        return None
    except UnicodeDecodeError as exc:
        return f"the body is not valid UTF-8 (byte {exc.start}: {exc.reason})"


def invalid_text_path(body: Any) -> tuple[str, str] | None:
    """``(path, problem)`` for the first string or key (``messages[0].content``) holding a lone
    surrogate or a NUL, or ``None`` when every string is clean text."""
    try:
        dumped = json.dumps(body, ensure_ascii=False)
        dumped.encode("utf-8")
        if "\\u0000" not in dumped:
            return None
    except UnicodeEncodeError:
        pass
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            problem = _problem(value)
            if problem:
                return path or "body", problem
        elif isinstance(value, dict):
            for k, v in reversed(list(value.items())):
                where = f"{path}.{k}" if path else str(k)
                problem = _problem(str(k))
                if problem:
                    return f"{path or 'body'} (a key)", problem
                stack.append((where, v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return None  # only an escaped backslash before "u0000": plain text


def lone_surrogate_path(body: Any) -> str | None:
    """The path of the first string or key holding a lone surrogate (or NUL), else ``None``."""
    found = invalid_text_path(body)
    return found[0] if found else None


def _problem(s: str) -> str | None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return ("contains a lone UTF-16 surrogate escape (\\ud800-\\udfff without its pair), "
                "which is not valid Unicode text")
    if "\x00" in s:
        return "contains a NUL character (\\u0000), which is not allowed in text"
    return None
