"""OpenAI wire shapes for stored rows: the file object, the batch object, output lines."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_BATCH_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "expires_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}
CANCELLED_ERROR = {
    "code": "batch_cancelled",
    "message": "This request was not executed because the batch was cancelled.",
}


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "file",
        "bytes": row["bytes"],
        "created_at": row["created_at"],
        "filename": row["filename"],
        "purpose": row["purpose"],
        "status": "processed",
        "status_details": None,
    }


def request_counts(total: int, counts: dict[str, int]) -> dict[str, int]:
    """OpenAI's ``{total, completed, failed}``; expired lines count as failed. ``cancelled`` and
    ``expired`` are grokd extras (clients ignore unknown keys) so a cancel is visible per line."""
    return {
        "total": total,
        "completed": counts.get("done", 0),
        "failed": counts.get("failed", 0) + counts.get("expired", 0),
        "expired": counts.get("expired", 0),
        "cancelled": counts.get("cancelled", 0),
    }


def batch_object(row: dict[str, Any], counts: dict[str, int]) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": row["id"],
        "object": "batch",
        "endpoint": row["endpoint"],
        "errors": json.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"],
        "completion_window": row["completion_window"],
        "status": row["status"],
        "output_file_id": row["output_file_id"],
        "error_file_id": row["error_file_id"],
        "request_counts": request_counts(row["total"], counts),
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
    }
    for key in _BATCH_TIMESTAMPS:
        obj[key] = row[key]
    return obj


def output_line(line: dict[str, Any]) -> dict[str, Any]:
    """One line of an output or error file, from a finished ``batch_lines`` row."""
    return {
        "id": line["id"],
        "custom_id": line["custom_id"],
        "response": json.loads(line["result"]) if line["result"] else None,
        "error": json.loads(line["error"]) if line["error"] else None,
    }


def list_page(rows: list[dict[str, Any]], limit: int, render: Callable[[dict[str, Any]], dict[str, Any]]) -> dict:
    """OpenAI's cursor page: ``rows`` holds up to ``limit + 1`` rows so ``has_more`` is exact."""
    data = [render(r) for r in rows[:limit]]
    return {
        "object": "list",
        "data": data,
        "has_more": len(rows) > limit,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
