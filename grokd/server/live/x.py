"""Posts from X through the API v2 recent-search endpoint (the last 7 days).

``GET {base}/2/tweets/search/recent`` with a bearer token. The query uses X's operators:
keywords OR-ed (an AND of every word of a chat turn would rarely match), ``from:`` for
included handles, ``-from:`` for excluded ones, and ``-is:retweet`` so the same post is not
cited several times. Minimum favourites/views are not search operators on the basic tiers, so
they are applied to ``public_metrics`` client-side while paging on ``meta.next_token``.

Rate limits: a 429 whose ``x-rate-limit-reset`` is within ``max_rate_limit_wait_s`` is waited
out and retried once; a later reset raises :class:`LiveSourceError` with ``rate_limited``. When a
successful page reports ``x-rate-limit-remaining: 0`` paging stops with what was collected.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .base import Document, LiveSourceError, SourceQuery
from .http_guard import FetchError, GuardedFetcher, GuardedSession

_MAX_QUERY_CHARS = 512  # X's limit for recent search on the basic tiers
_WINDOW = timedelta(days=7)


@dataclass(frozen=True)
class XConfig:
    bearer_token: str
    base_url: str = "https://api.x.com"
    page_size: int = 100  # X accepts 10..100
    max_pages: int = 5
    max_rate_limit_wait_s: float = 5.0


def build_query(q: SourceQuery, limit: int = _MAX_QUERY_CHARS) -> str:
    """The X search query for ``q``; keywords are dropped from the end until it fits ``limit``."""
    fixed: list[str] = []
    if q.included_handles:
        froms = [f"from:{h}" for h in q.included_handles]
        fixed.append(froms[0] if len(froms) == 1 else "(" + " OR ".join(froms) + ")")
    fixed.extend(f"-from:{h}" for h in q.excluded_handles)
    fixed.append("-is:retweet")
    optional = [f"@{h}" for h in q.mentions if h.lower() not in {x.lower() for x in q.included_handles}]
    optional += list(q.terms)
    while True:
        if optional:
            group = optional[0] if len(optional) == 1 else "(" + " OR ".join(optional) + ")"
            query = " ".join([group, *fixed])
        else:
            query = " ".join(fixed)
        if len(query) <= limit or not optional:
            return query
        optional.pop()


def _time_window(q: SourceQuery, now: datetime) -> tuple[datetime | None, datetime | None]:
    """Clamp the requested range to what recent search accepts (last 7 days, ending >10 s ago)."""
    earliest = now - _WINDOW + timedelta(minutes=1)
    latest = now - timedelta(seconds=30)
    start = max(q.from_time, earliest) if q.from_time else None
    end = min(q.to_time, latest) if q.to_time else None
    return start, end


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


class XSource:
    """:class:`~server.live.base.LiveSource` for X posts."""

    name = "x"

    def __init__(self, config: XConfig, fetcher: GuardedFetcher) -> None:
        self._config = config
        self._fetcher = fetcher

    async def search(self, query: SourceQuery) -> list[Document]:
        if not (query.terms or query.mentions or query.included_handles):
            return []  # X rejects a query of negations only, and "everything" is no search
        now = datetime.now(UTC)
        start, end = _time_window(query, now)
        if start is not None and end is not None and start >= end:
            return []  # the requested range lies entirely outside the recent-search window
        params: dict[str, Any] = {
            "query": build_query(query),
            "max_results": max(10, min(self._config.page_size, 100)),
            "expansions": "author_id",
            "user.fields": "username,name",
            "tweet.fields": "created_at,public_metrics,author_id",
        }
        if start is not None:
            params["start_time"] = _rfc3339(start)
        if end is not None:
            params["end_time"] = _rfc3339(end)
        docs: list[Document] = []
        async with self._fetcher.session() as session:
            for _page in range(self._config.max_pages):
                body, exhausted = await self._page(session, params)
                docs.extend(self._documents(body, query))
                token = (body.get("meta") or {}).get("next_token")
                if len(docs) >= query.max_results or not token or exhausted:
                    break
                params["next_token"] = token
        return docs[: query.max_results]

    async def _page(self, session: GuardedSession, params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """One page of results and whether the rate-limit window is used up."""
        url = self._config.base_url.rstrip("/") + "/2/tweets/search/recent"
        headers = {"authorization": f"Bearer {self._config.bearer_token}"}
        for attempt in range(2):
            try:
                response = await session.get(url, params=params, headers=headers)
            except FetchError as exc:
                raise LiveSourceError(self.name, str(exc), timeout=exc.timeout) from exc
            if response.status_code == 429:
                wait = self._reset_wait(response.headers.get("x-rate-limit-reset"))
                if attempt == 0 and wait <= self._config.max_rate_limit_wait_s:
                    await asyncio.sleep(wait)
                    continue
                raise LiveSourceError(
                    self.name,
                    f"rate limited by X for {wait:.0f}s more",
                    status=429,
                    rate_limited=True,
                    retry_after=wait,
                )
            if response.status_code != 200:
                raise LiveSourceError(
                    self.name,
                    f"X API answered {response.status_code}: {_problem(response.content)}",
                    status=response.status_code,
                )
            try:
                body = response.json()
            except ValueError as exc:
                raise LiveSourceError(self.name, "X API answered with invalid JSON", status=200) from exc
            if not isinstance(body, dict):
                raise LiveSourceError(self.name, "X API answered with an unexpected body", status=200)
            return body, response.headers.get("x-rate-limit-remaining") == "0"
        raise AssertionError("unreachable")

    @staticmethod
    def _reset_wait(reset: str | None) -> float:
        """Seconds until ``x-rate-limit-reset`` (epoch seconds); unknown reset counts as long."""
        try:
            return max(0.0, float(reset) - time.time()) if reset is not None else math.inf
        except ValueError:
            return math.inf

    def _documents(self, body: dict[str, Any], query: SourceQuery) -> list[Document]:
        users = {
            u.get("id"): u for u in (body.get("includes") or {}).get("users") or [] if isinstance(u, dict)
        }
        docs = []
        for post in body.get("data") or []:
            if not isinstance(post, dict) or "id" not in post:
                continue
            metrics = post.get("public_metrics") or {}
            likes = int(metrics.get("like_count") or 0)
            views = int(metrics.get("impression_count") or 0)
            if query.min_favorites is not None and likes < query.min_favorites:
                continue
            if query.min_views is not None and views < query.min_views:
                continue
            user = users.get(post.get("author_id")) or {}
            username = user.get("username") or "i"  # x.com/i/status/<id> resolves without a handle
            engagement = (
                likes + 2 * int(metrics.get("retweet_count") or 0) + int(metrics.get("reply_count") or 0)
            )
            docs.append(
                Document(
                    source=self.name,
                    url=f"https://x.com/{username}/status/{post['id']}",
                    title=f"@{username}" if user else "",
                    text=str(post.get("text") or ""),
                    author=f"@{username}" if user else None,
                    published_at=_parse_time(post.get("created_at")),
                    score=math.log1p(engagement),
                )
            )
        return docs


def _problem(content: bytes) -> str:
    """A short description from an X problem+json body."""
    import json

    try:
        body = json.loads(content)
    except ValueError:
        return content[:200].decode("utf-8", "replace")
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict) and errors[0].get("message"):
            return str(errors[0]["message"])[:300]
        return str(body.get("detail") or body.get("title") or body)[:300]
    return str(body)[:300]
