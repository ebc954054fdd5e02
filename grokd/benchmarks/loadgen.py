"""OpenAI-protocol load generator: streams requests at a closed-loop concurrency or with
Poisson arrivals and records what the client sees (TTFT, chunk arrivals, end-to-end latency).

It speaks only the public protocol (``/v1/completions`` or ``/v1/chat/completions`` with
``stream: true``), so the same run measures grokd and any peer server alike.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tqdm import tqdm

from grokd.benchmarks.stats import RequestResult
from grokd.benchmarks.workload import WorkItem


@dataclass
class Target:
    base_url: str  # ends with /v1
    model: str
    endpoint: str = "completions"  # completions | chat
    api_key: str | None = None
    ignore_eos: bool = True
    extra_body: dict[str, Any] = field(default_factory=dict)

    def url(self) -> str:
        path = "chat/completions" if self.endpoint == "chat" else "completions"
        return f"{self.base_url.rstrip('/')}/{path}"

    def body(self, item: WorkItem) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": item.max_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        if self.endpoint == "chat":
            text = item.prompt if isinstance(item.prompt, str) else " ".join(map(str, item.prompt))
            body["messages"] = [{"role": "user", "content": text}]
        else:
            body["prompt"] = item.prompt
        body.update(self.extra_body)
        return body

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


def _has_content(choice: dict[str, Any]) -> bool:
    """A chunk carries output when it has text, delta content, or (tokenizer-less servers) logprobs."""
    delta = choice.get("delta") or {}
    return bool(choice.get("text") or delta.get("content") or delta.get("reasoning_content")
                or choice.get("logprobs"))


async def send(client: httpx.AsyncClient, target: Target, item: WorkItem) -> RequestResult:
    """One streamed request; errors are recorded on the result, never raised."""
    res = RequestResult(prompt_tokens=item.prompt_tokens)
    res.start = time.perf_counter()
    usage_tokens: int | None = None
    chunks = 0
    try:
        async with client.stream("POST", target.url(), json=target.body(item), headers=target.headers()) as r:
            if r.status_code != 200:
                text = (await r.aread()).decode(errors="replace")
                res.error = f"HTTP {r.status_code}: {text[:200]}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(payload)
                if chunk.get("error"):
                    res.error = str(chunk["error"])[:200]
                    return res
                usage = chunk.get("usage")
                if usage:
                    usage_tokens = usage.get("completion_tokens")
                    res.prompt_tokens = usage.get("prompt_tokens") or res.prompt_tokens
                if any(_has_content(c) for c in chunk.get("choices") or []):
                    chunks += 1
                    res.chunk_times.append(now)
                    if res.ttft is None:
                        res.ttft = now - res.start
        res.latency = time.perf_counter() - res.start
        res.output_tokens = usage_tokens if usage_tokens is not None else chunks
        if res.ttft is None:
            res.error = "no output tokens streamed"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"[:200]
    return res


def _client(max_conn: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=max_conn + 4, max_keepalive_connections=max_conn + 4)
    return httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=30.0), limits=limits)


async def run_closed_loop(
    target: Target, items: list[WorkItem], concurrency: int, progress: bool = True
) -> tuple[list[RequestResult], float]:
    """``concurrency`` workers each send their next request as soon as the last one ends."""
    queue: asyncio.Queue[WorkItem] = asyncio.Queue()
    for it in items:
        queue.put_nowait(it)
    results: list[RequestResult] = []
    bar = tqdm(total=len(items), desc=f"concurrency {concurrency}", disable=not progress, leave=False)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            results.append(await send(client, target, queue.get_nowait()))
            bar.update(1)

    async with _client(concurrency) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        duration = time.perf_counter() - t0
    bar.close()
    return results, duration


async def run_poisson(
    target: Target,
    items: list[WorkItem],
    rate: float,
    max_concurrency: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[RequestResult], float]:
    """Open loop: requests arrive with exponential gaps at ``rate``/s (inf = all at once),
    optionally capped at ``max_concurrency`` in flight."""
    rng = random.Random(seed)
    sem = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    bar = tqdm(total=len(items), desc=f"rate {rate}/s", disable=not progress, leave=False)

    async def one(client: httpx.AsyncClient, it: WorkItem) -> RequestResult:
        if sem is None:
            res = await send(client, target, it)
        else:
            async with sem:
                res = await send(client, target, it)
        bar.update(1)
        return res

    async with _client(max_concurrency or len(items)) as client:
        t0 = time.perf_counter()
        tasks = []
        for i, it in enumerate(items):
            if i and rate != float("inf"):
                await asyncio.sleep(rng.expovariate(rate))
            tasks.append(asyncio.create_task(one(client, it)))
        results = list(await asyncio.gather(*tasks))
        duration = time.perf_counter() - t0
    bar.close()
    return results, duration
