"""Shared test helpers: batch-file builders and a deterministic executor for store/runner tests.

The executor answers like the chat/completions routes would in shape (status, body) without an
engine; it is only for store, validation and crash-safety tests. End-to-end tests use the real
server (tests/e2e/test_batch_*.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter


def chat_line(custom_id: str, content: str, model: str = "test-model", **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def answer_for(body: dict) -> str:
    """What the fake model 'says' for a body: a pure function of the request."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:12]


class FakeExecutor:
    """``execute(url, body, priority)`` that records calls, can be slowed down or gated, and
    fails on demand (``fail_custom`` by message content -> 400)."""

    def __init__(self, delay: float = 0.0, fail_contents: tuple[str, ...] = ()) -> None:
        self.delay = delay
        self.fail_contents = fail_contents
        self.calls: Counter[str] = Counter()
        self.priorities: list[int] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, url: str, body: dict, priority: int) -> tuple[int, dict]:
        content = body["messages"][-1]["content"] if "messages" in body else str(body.get("prompt"))
        self.calls[content] += 1
        self.priorities.append(priority)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if content in self.fail_contents:
            return 400, {"error": {"message": "bad", "type": "invalid_request_error", "param": None, "code": None}}
        return 200, {
            "id": f"chatcmpl-{answer_for(body)}",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer_for(body)},
                         "finish_reason": "stop"}],
        }
