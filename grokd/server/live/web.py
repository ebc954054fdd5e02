"""Web and news search through a pluggable backend; SearXNG is the implementation that needs no key.

A backend only has to turn a query into ranked documents (:class:`SearchBackend`). The SearXNG
backend calls ``GET {url}/search?q=...&format=json`` (the instance must enable the JSON format)
with ``categories=general`` or ``news``, ``safesearch`` and a ``time_range`` derived from
``from_date``; allowed/excluded websites are enforced on result hosts here, because engines
behind SearXNG honour ``site:`` inconsistently. Without a configured backend the service
rejects web/news sources with a 400 (see ``service.py``) instead of silently returning nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol
from urllib.parse import urlsplit

from .base import Document, LiveSourceError, SourceQuery
from .http_guard import FetchError, GuardedFetcher
from .textutil import host_matches, html_to_text

Kind = Literal["web", "news"]


class SearchBackend(Protocol):
    """Something that answers a web or news search (SearXNG, a paid API, an intranet engine)."""

    async def search(self, query: SourceQuery, kind: Kind) -> list[Document]: ...


@dataclass(frozen=True)
class SearxngConfig:
    url: str
    language: str = "all"


def _time_range(query: SourceQuery, now: datetime) -> str | None:
    if query.from_time is None:
        return None
    days = (now - query.from_time).total_seconds() / 86400
    for limit, name in ((1, "day"), (7, "week"), (31, "month"), (366, "year")):
        if days <= limit:
            return name
    return None


def _parse_date(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


class SearxngBackend:
    """:class:`SearchBackend` over a SearXNG instance's JSON API."""

    def __init__(self, config: SearxngConfig, fetcher: GuardedFetcher) -> None:
        self._config = config
        self._fetcher = fetcher

    async def search(self, query: SourceQuery, kind: Kind) -> list[Document]:
        text = " ".join(query.terms) or query.text
        params: dict[str, str] = {
            "q": text,
            "format": "json",
            "categories": "news" if kind == "news" else "general",
            "safesearch": "1" if query.safe_search else "0",
            "language": query.country.lower() if query.country else self._config.language,
        }
        window = _time_range(query, datetime.now(UTC))
        if window:
            params["time_range"] = window
        try:
            response = await self._fetcher.get(self._config.url.rstrip("/") + "/search", params=params)
        except FetchError as exc:
            raise LiveSourceError(kind, str(exc), timeout=exc.timeout) from exc
        if response.status_code != 200:
            raise LiveSourceError(
                kind, f"search backend answered {response.status_code}", status=response.status_code
            )
        try:
            body = response.json()
        except ValueError as exc:
            raise LiveSourceError(
                kind, "search backend answered with invalid JSON (is format=json enabled?)"
            ) from exc
        docs: list[Document] = []
        results = body.get("results") if isinstance(body, dict) else None
        for rank, item in enumerate(results or []):
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            host = urlsplit(item["url"]).hostname or ""
            if query.allowed_websites and not host_matches(host, query.allowed_websites):
                continue
            if query.excluded_websites and host_matches(host, query.excluded_websites):
                continue
            published = _parse_date(item.get("publishedDate"))
            if published is not None and not query.in_range(published):
                continue
            docs.append(
                Document(
                    source=kind,
                    url=item["url"],
                    title=html_to_text(str(item.get("title") or "")),
                    text=html_to_text(str(item.get("content") or "")),
                    author=host or None,
                    published_at=published,
                    score=float(item.get("score") or 1.0 / (1 + rank)),
                )
            )
            if len(docs) >= query.max_results:
                break
        return docs


class WebSource:
    """:class:`~server.live.base.LiveSource` adapter: one per kind (``web``, ``news``)."""

    def __init__(self, backend: SearchBackend, kind: Kind) -> None:
        self.name: str = kind
        self._backend = backend
        self._kind: Kind = kind

    async def search(self, query: SourceQuery) -> list[Document]:
        return await self._backend.search(query, self._kind)
