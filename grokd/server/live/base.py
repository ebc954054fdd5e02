"""The one interface every live source implements, and the values that cross it.

A source takes a :class:`SourceQuery` (already validated and normalised by the service) and
returns :class:`Document` objects, best first. Sources never raise anything but
:class:`LiveSourceError` for fetch problems, so retrieval can tell a timeout from a dead
upstream and report it under the source's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass
class Document:
    """One fresh post or article. ``score`` is the source's own relevance (higher is better)."""

    source: str
    url: str
    title: str = ""
    text: str = ""
    author: str | None = None
    published_at: datetime | None = None  # timezone-aware UTC when known
    score: float = 0.0


@dataclass(frozen=True)
class SourceQuery:
    """What to look for, with the filters of one requested source.

    ``terms`` are lower-case keywords safe to put in any query language (letters/digits only);
    ``mentions`` are @handles found in the conversation; ``included_handles`` /
    ``excluded_handles`` come from the request's source filters. Times are UTC, inclusive.
    """

    text: str = ""
    terms: tuple[str, ...] = ()
    mentions: tuple[str, ...] = ()
    included_handles: tuple[str, ...] = ()
    excluded_handles: tuple[str, ...] = ()
    from_time: datetime | None = None
    to_time: datetime | None = None
    min_favorites: int | None = None
    min_views: int | None = None
    max_results: int = 15
    links: tuple[str, ...] = ()
    allowed_websites: tuple[str, ...] = ()
    excluded_websites: tuple[str, ...] = ()
    country: str | None = None
    safe_search: bool = True
    extra: dict[str, str] = field(default_factory=dict)

    def in_range(self, when: datetime | None) -> bool:
        """Whether ``when`` lies within [from_time, to_time]; unknown times pass only without a range."""
        if when is None:
            return self.from_time is None and self.to_time is None
        if self.from_time is not None and when < self.from_time:
            return False
        return self.to_time is None or when <= self.to_time


@runtime_checkable
class LiveSource(Protocol):
    """A provider of fresh documents. ``name`` is the type used in ``search_parameters.sources``."""

    name: str

    async def search(self, query: SourceQuery) -> list[Document]: ...


class LiveSourceError(Exception):
    """A source could not answer. Carries enough to pick the HTTP status for ``mode: on``."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        timeout: bool = False,
        status: int | None = None,
        rate_limited: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source
        self.message = message
        self.timeout = timeout
        self.status = status
        self.rate_limited = rate_limited
        self.retry_after = retry_after


class SourceNotConfiguredError(ValueError):
    """A request named a source this server has no backend for (maps to HTTP 400)."""
