"""Real-time context for chat: fresh documents from X, RSS/Atom, web/news search and an on-prem
firehose, put into the prompt with citations. Entry points: :class:`LiveContextService`
(``augment``), :func:`build_router` (``POST /v1/live/documents``), :func:`resolve` (request
parsing). One module per source, all behind :class:`~server.live.base.LiveSource`."""

from .base import Document, LiveSource, LiveSourceError, SourceNotConfiguredError, SourceQuery
from .params import SearchParameters, parse_search_parameters, resolve, split_live_search_tools
from .retrieval import DEGRADED_HEADER, LiveContextError
from .router import build_router
from .service import LiveConfig, LiveContextService, LiveResult

__all__ = [
    "DEGRADED_HEADER",
    "Document",
    "LiveConfig",
    "LiveContextError",
    "LiveContextService",
    "LiveResult",
    "LiveSource",
    "LiveSourceError",
    "SearchParameters",
    "SourceNotConfiguredError",
    "SourceQuery",
    "build_router",
    "parse_search_parameters",
    "resolve",
    "split_live_search_tools",
]
