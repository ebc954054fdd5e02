"""Items from RSS 2.0 / Atom feeds named in ``links``, parsed by feedparser.

feedparser is only given bytes: fetching goes through the SSRF guard, never feedparser's own
URL opener. Each feed is cached in this object for ``ttl_s`` (a chat burst does not refetch),
and after that revalidated with a conditional GET (If-None-Match / If-Modified-Since), so an
unchanged feed costs a 304. The cache is bounded and belongs to the source instance.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

import feedparser

from .base import Document, LiveSourceError, SourceQuery
from .http_guard import FetchError, GuardedFetcher
from .textutil import html_to_text, overlap


@dataclass(frozen=True)
class RssConfig:
    ttl_s: float = 60.0
    max_feeds_cached: int = 256
    max_items_per_feed: int = 200


@dataclass
class _Cached:
    items: list[Document]
    etag: str | None
    last_modified: str | None
    checked_at: float


class RssSource:
    """:class:`~server.live.base.LiveSource` for feeds. Fails only when every link failed."""

    name = "rss"

    def __init__(self, fetcher: GuardedFetcher, config: RssConfig | None = None) -> None:
        self._fetcher = fetcher
        self._config = config or RssConfig()
        self._cache: OrderedDict[str, _Cached] = OrderedDict()

    async def search(self, query: SourceQuery) -> list[Document]:
        if not query.links:
            return []
        results = await asyncio.gather(*(self._items(link) for link in query.links), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures and len(failures) == len(results):
            first = failures[0]
            if isinstance(first, LiveSourceError):
                raise first
            raise LiveSourceError(self.name, str(first)) from first
        docs = [
            d
            for r in results
            if not isinstance(r, BaseException)
            for d in r
            if query.in_range(d.published_at)
        ]
        for doc in docs:
            doc.score = overlap(query.terms, f"{doc.title} {doc.text}")
        epoch = datetime.min.replace(tzinfo=UTC)
        docs.sort(key=lambda d: (d.score, d.published_at or epoch), reverse=True)
        return docs[: query.max_results]

    async def _items(self, link: str) -> list[Document]:
        now = time.monotonic()
        cached = self._cache.get(link)
        if cached is not None and now - cached.checked_at < self._config.ttl_s:
            return [_copy(d) for d in cached.items]
        headers = {"accept": "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5"}
        if cached is not None and cached.etag:
            headers["if-none-match"] = cached.etag
        if cached is not None and cached.last_modified:
            headers["if-modified-since"] = cached.last_modified
        try:
            response = await self._fetcher.get(link, headers=headers)
        except FetchError as exc:
            raise LiveSourceError(self.name, str(exc), timeout=exc.timeout) from exc
        if response.status_code == 304 and cached is not None:
            cached.checked_at = now
            self._cache.move_to_end(link)
            return [_copy(d) for d in cached.items]
        if response.status_code != 200:
            raise LiveSourceError(
                self.name, f"{link} answered {response.status_code}", status=response.status_code
            )
        items = self._parse(response.content, link)
        self._cache[link] = _Cached(
            items, response.headers.get("etag"), response.headers.get("last-modified"), now
        )
        self._cache.move_to_end(link)
        while len(self._cache) > self._config.max_feeds_cached:
            self._cache.popitem(last=False)
        return [_copy(d) for d in items]

    def _parse(self, content: bytes, link: str) -> list[Document]:
        parsed = feedparser.parse(content)
        if not parsed.get("entries") and (parsed.get("bozo") or not parsed.get("version")):
            reason = parsed.get("bozo_exception") or "no feed elements"
            raise LiveSourceError(self.name, f"{link} is not a readable RSS/Atom feed ({reason})")
        feed_title = html_to_text(str(parsed.get("feed", {}).get("title") or ""))
        items: list[Document] = []
        for entry in parsed.get("entries", [])[: self._config.max_items_per_feed]:
            url = entry.get("link") or entry.get("id")
            if not url:
                continue
            summary = entry.get("summary") or ""
            contents = entry.get("content") or []
            if contents and isinstance(contents, list) and contents[0].get("value"):
                body = contents[0]["value"]
                summary = body if len(body) > len(summary) else summary
            when = entry.get("published_parsed") or entry.get("updated_parsed")
            items.append(
                Document(
                    source=self.name,
                    url=str(url),
                    title=html_to_text(str(entry.get("title") or "")),
                    text=html_to_text(str(summary)),
                    author=str(entry.get("author")) if entry.get("author") else feed_title or None,
                    published_at=datetime.fromtimestamp(calendar.timegm(when), UTC) if when else None,
                )
            )
        return items


def _copy(doc: Document) -> Document:
    return Document(doc.source, doc.url, doc.title, doc.text, doc.author, doc.published_at, doc.score)
