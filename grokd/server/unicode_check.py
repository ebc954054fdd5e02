"""Rejecting JSON bodies whose strings are not Unicode text.

JSON's ``\\uXXXX`` escapes can spell half of a UTF-16 surrogate pair (``"\\ud800"``): valid JSON,
which Python decodes to a ``str`` holding a lone surrogate, but not text. Nothing downstream can
encode it (tokenizers, UTF-8 logs, SQLite), so a request carrying one is refused up front with a
400 naming the field. The check is one C-speed re-encode of the parsed body; only a body that
fails it is walked to find the path.
"""

from __future__ import annotations

import json
from typing import Any


def lone_surrogate_path(body: Any) -> str | None:
    """The path (``messages[0].content``) of the first string or key holding a lone surrogate,
    or ``None`` when every string is valid Unicode."""
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError:
        pass
    stack: list[tuple[str, Any]] = [("", body)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if not _is_text(value):
                return path or "body"
        elif isinstance(value, dict):
            for k, v in reversed(list(value.items())):
                where = f"{path}.{k}" if path else str(k)
                if not _is_text(str(k)):
                    return f"{path or 'body'} (a key)"
                stack.append((where, v))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in reversed(list(enumerate(value))))
    return "body"


def _is_text(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
