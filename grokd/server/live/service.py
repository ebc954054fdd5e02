"""The entry point the chat route calls: ``LiveContextService.augment``.

Built once at startup from :class:`LiveConfig`; holds the configured sources (local index,
X, RSS with its cache, web/news backend) and nothing request-specific.

Sources a request may name: ``local`` when a state dir is set, ``x`` when a bearer token is
set, ``web``/``news`` when a search backend is configured, ``rss`` always (links are guarded).
Naming an unconfigured one is a 400 (``ValueError``). Without ``sources`` every configured
source except ``rss`` (which needs links) is used.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from .base import Document, LiveSource, SourceNotConfiguredError, SourceQuery
from .http_guard import FetchLimits, GuardedFetcher
from .local import LocalConfig, LocalIndex
from .params import SOURCE_TYPES, SearchParameters, SourceParams, parse_search_parameters
from .retrieval import (
    DEGRADED_HEADER,
    ConversationQuery,
    LiveContextError,
    Tokenizer,
    build_query,
    fetch_all,
    rank,
    render_context,
    should_search,
)
from .rss import RssConfig, RssSource
from .web import SearchBackend, SearxngBackend, SearxngConfig, WebSource
from .x import XConfig, XSource

log = logging.getLogger("grokd.live")
_SOURCE_ADAPTER: TypeAdapter[SourceParams] = TypeAdapter(SourceParams)

_NOT_CONFIGURED_HINT = {
    "x": "set GROKD_X_BEARER_TOKEN",
    "web": "start grokd with a search backend URL (--live-searxng-url)",
    "news": "start grokd with a search backend URL (--live-searxng-url)",
    "local": "start grokd with --state-dir",
}


@dataclass(frozen=True)
class LiveConfig:
    state_dir: Path | None = None
    x_bearer_token: str | None = None
    x_base_url: str = "https://api.x.com"
    searxng_url: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    source_timeout_s: float = 8.0  # per source, whole search (pages, feeds) included
    fetch_timeout_s: float = 6.0  # per HTTP fetch, redirects included
    max_fetch_bytes: int = 5 * 1024 * 1024
    rss_cache_ttl_s: float = 60.0
    x_max_rate_limit_wait_s: float = 3.0
    half_life_hours: float = 24.0
    max_context_tokens: int = 4096  # ceiling on the context block whatever the route offers

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **values: Any) -> LiveConfig:
        """``values`` (from CLI flags) plus the bearer token from ``GROKD_X_BEARER_TOKEN`` if not given."""
        env = os.environ if environ is None else environ
        if not values.get("x_bearer_token"):
            values["x_bearer_token"] = env.get("GROKD_X_BEARER_TOKEN") or None
        if "allowed_hosts" in values:
            values["allowed_hosts"] = tuple(values["allowed_hosts"] or ())
        if values.get("state_dir") is not None:
            values["state_dir"] = Path(values["state_dir"])
        return cls(**values)


@dataclass
class LiveResult:
    """What live context did for one request. ``citations`` are the URLs in ``context``, in order
    (empty when ``return_citations`` is false or the result is degraded)."""

    mode: str
    searched: bool = False
    context: str = ""
    citations: list[str] = field(default_factory=list)
    num_sources_used: int = 0
    degraded: bool = False
    errors: list[str] = field(default_factory=list)
    documents: list[Document] = field(default_factory=list)
    query: str = ""
    return_citations: bool = True

    def response_fields(self) -> dict[str, Any]:
        """Top-level fields for the chat.completion body (streaming: the last chunk):
        ``citations`` when a search ran, succeeded and citations were asked for."""
        if self.searched and not self.degraded and self.return_citations:
            return {"citations": list(self.citations)}
        return {}

    def usage_fields(self) -> dict[str, Any]:
        """Extra ``usage`` fields: ``num_sources_used`` whenever live context ran (0 when degraded)."""
        return {"num_sources_used": self.num_sources_used} if self.searched else {}

    @property
    def headers(self) -> dict[str, str]:
        """Response headers: ``x-grokd-live-context`` = used | empty | skipped | degraded (none when off)."""
        if self.mode == "off":
            return {}
        if self.degraded:
            state = "degraded"
        elif not self.searched:
            state = "skipped"
        else:
            state = "used" if self.context else "empty"
        return {DEGRADED_HEADER: state}

    def inject(self, messages: Sequence[Any], position: str = "system") -> list[Any]:
        """``messages`` (dicts or pydantic models; returned as dicts) with the context added.

        ``system`` (default) appends it to the leading system message (creating one), which
        every chat template accepts; ``before_last_user`` inserts a system message before the
        last user turn, which keeps earlier turns prefix-cacheable where the template allows a
        mid-conversation system message."""
        out = [m.model_dump(exclude_none=True) if hasattr(m, "model_dump") else m for m in messages]
        if not self.context:
            return out
        if position == "before_last_user":
            last = max((i for i, m in enumerate(out) if _role(m) == "user"), default=len(out))
            out.insert(last, {"role": "system", "content": self.context})
            return out
        if out and _role(out[0]) == "system":
            first = dict(out[0])
            content = first.get("content")
            if isinstance(content, list):
                first["content"] = [*content, {"type": "text", "text": "\n\n" + self.context}]
            else:
                first["content"] = f"{content or ''}\n\n{self.context}".lstrip()
            out[0] = first
        else:
            out.insert(0, {"role": "system", "content": self.context})
        return out

    def debug(self) -> dict[str, Any]:
        """A JSON-able summary for a debug field or log line."""
        return {
            "mode": self.mode,
            "searched": self.searched,
            "query": self.query,
            "degraded": self.degraded,
            "errors": self.errors,
            "documents": [d.url for d in self.documents],
            "context": self.context,
        }


def _role(message: Any) -> str | None:
    return message.get("role") if isinstance(message, dict) else getattr(message, "role", None)


class LiveContextService:
    """Configured sources plus the augment pipeline. One per server process."""

    def __init__(
        self,
        config: LiveConfig,
        *,
        sources: Mapping[str, LiveSource] | None = None,
        web_backend: SearchBackend | None = None,
    ) -> None:
        """``sources`` replaces/adds sources by name (tests, custom deployments); ``web_backend``
        plugs a non-SearXNG search engine in for ``web`` and ``news``."""
        self.config = config
        self.fetcher = GuardedFetcher(
            config.allowed_hosts,
            FetchLimits(total_timeout_s=config.fetch_timeout_s, max_bytes=config.max_fetch_bytes),
        )
        self.local: LocalIndex | None = None
        built: dict[str, LiveSource] = {}
        if config.state_dir is not None:
            self.local = LocalIndex(
                LocalConfig(Path(config.state_dir) / "live.sqlite3", half_life_hours=config.half_life_hours)
            )
            built["local"] = self.local
        if config.x_bearer_token:
            x_config = XConfig(
                config.x_bearer_token, config.x_base_url, max_rate_limit_wait_s=config.x_max_rate_limit_wait_s
            )
            built["x"] = XSource(x_config, self.fetcher)
        if web_backend is None and config.searxng_url:
            web_backend = SearxngBackend(SearxngConfig(config.searxng_url), self.fetcher)
        if web_backend is not None:
            built["web"] = WebSource(web_backend, "web")
            built["news"] = WebSource(web_backend, "news")
        built["rss"] = RssSource(self.fetcher, RssConfig(ttl_s=config.rss_cache_ttl_s))
        built.update(sources or {})
        self.sources: dict[str, LiveSource] = built

    def token_budget(self, context_window: int, prompt_tokens: int, reserved_completion_tokens: int) -> int:
        """Tokens the context block may take: what the window has left after the prompt and the
        completion's reservation, less a small allowance for the template's own tokens, capped
        at ``max_context_tokens``."""
        room = context_window - prompt_tokens - reserved_completion_tokens - 16
        return max(0, min(room, self.config.max_context_tokens))

    def validate(self, search_parameters: Any) -> SearchParameters:
        """Parse and check against what this server has configured; raises ValueError for a 400."""
        params = parse_search_parameters(search_parameters)
        for index, spec in enumerate(params.sources or []):
            if spec.type not in self.sources:
                raise SourceNotConfiguredError(
                    f"search_parameters.sources[{index}].type: source {spec.type!r} is not configured on this "
                    f"server ({_NOT_CONFIGURED_HINT.get(spec.type, 'not available')})"
                )
        if params.mode == "on" and params.sources is None and not self._default_sources():
            raise SourceNotConfiguredError(
                "search_parameters.sources: no live source is configured on this server"
            )
        return params

    def _default_sources(self) -> list[str]:
        return [name for name in self.sources if name != "rss" and name in SOURCE_TYPES]

    async def augment(
        self,
        messages: Sequence[Any],
        search_parameters: SearchParameters | dict[str, Any] | None,
        tokenizer: Tokenizer,
        token_budget: int,
        *,
        now: datetime | None = None,
    ) -> LiveResult:
        """Search if the request asks for it and return the context to inject.

        Raises ValueError (→ 400) for bad parameters and :class:`LiveContextError` (→ its status)
        when ``mode`` is ``on`` and a source fails. ``token_budget`` is the room left in the
        context window for the block; it is capped at ``max_context_tokens``.
        """
        if search_parameters is None:
            return LiveResult(mode="off")
        params = self.validate(search_parameters)
        if params.mode == "off":
            return LiveResult(mode="off")
        now = now or datetime.now(UTC)
        conversation = build_query(messages)
        specs = (
            params.sources
            if params.sources is not None
            else [_default_spec(n) for n in self._default_sources()]
        )
        if not specs:
            return LiveResult(mode=params.mode, query=conversation.text)
        targeted = any(getattr(s, "links", None) or getattr(s, "included_x_handles", None) for s in specs)
        if params.mode == "auto" and not targeted and not should_search(conversation.text, now):
            return LiveResult(mode="auto", query=conversation.text)
        requests = [(self.sources[s.type], _source_query(s, params, conversation)) for s in specs]
        outcome = await fetch_all(requests, self.config.source_timeout_s)
        errors = [str(f) for f in outcome.failures]
        if outcome.failures:
            if params.mode == "on":
                raise LiveContextError.from_failures(outcome.failures)
            log.warning("live context degraded: %s", "; ".join(errors))
            return LiveResult(
                mode="auto", searched=True, degraded=True, errors=errors, query=conversation.text
            )
        ranked = rank(outcome.documents, conversation.terms, now, self.config.half_life_hours)
        budget = min(token_budget, self.config.max_context_tokens)
        context, used = render_context(ranked[: params.max_search_results], tokenizer, budget, now)
        # Never the query text: prompts are only logged by the routes, under --log-prompts.
        log.info(
            "live context: %d documents (%d fetched) from %d sources for a %d-character query",
            len(used),
            len(outcome.documents),
            len(specs),
            len(conversation.text),
        )
        log.debug("live context block:\n%s", context)
        return LiveResult(
            mode=params.mode,
            searched=True,
            context=context,
            citations=[d.url for d in used] if params.return_citations else [],
            num_sources_used=len(used),
            documents=used,
            query=conversation.text,
            return_citations=params.return_citations,
        )


def _default_spec(name: str) -> SourceParams:
    return _SOURCE_ADAPTER.validate_python({"type": name})


def _source_query(spec: SourceParams, params: SearchParameters, conversation: ConversationQuery) -> SourceQuery:
    start, end = params.time_range()
    common: dict[str, Any] = {
        "text": conversation.text,
        "terms": conversation.terms,
        "mentions": conversation.mentions,
        "from_time": start,
        "to_time": end,
        "max_results": params.max_search_results,
    }
    if spec.type == "x":
        return SourceQuery(
            **common,
            included_handles=tuple(spec.included_x_handles or ()),
            excluded_handles=tuple(spec.excluded_x_handles or ()),
            min_favorites=spec.post_favorite_count,
            min_views=spec.post_view_count,
        )
    if spec.type in {"web", "news"}:
        return SourceQuery(
            **common,
            allowed_websites=tuple(getattr(spec, "allowed_websites", None) or ()),
            excluded_websites=tuple(spec.excluded_websites or ()),
            country=spec.country,
            safe_search=spec.safe_search,
        )
    if spec.type == "rss":
        return SourceQuery(**common, links=tuple(spec.links))
    if spec.type == "local":
        return SourceQuery(
            **common,
            included_handles=tuple(spec.included_handles or ()),
            excluded_handles=tuple(spec.excluded_handles or ()),
        )
    return SourceQuery(**common)
