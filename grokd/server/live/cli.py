"""``grokd serve`` flags for live context, kept next to the code they configure.

The serve command calls :func:`add_arguments` on its parser and :func:`config_from_args` with
the parsed namespace (``state_dir`` is the server's own ``--state-dir``). The X bearer token is
read from ``GROKD_X_BEARER_TOKEN`` only, so it never shows up in ``ps`` output.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from .service import LiveConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("live context (search_parameters)")
    group.add_argument(
        "--live-allow-host",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="let live fetches reach this private/loopback host (repeatable; e.g. an intranet SearXNG)",
    )
    group.add_argument(
        "--live-searxng-url", help="SearXNG instance for web/news sources (JSON format enabled)"
    )
    group.add_argument("--live-x-base-url", default="https://api.x.com", help="X API base URL")
    group.add_argument(
        "--live-source-timeout", type=float, default=8.0, help="seconds per source per request"
    )
    group.add_argument("--live-rss-ttl", type=float, default=60.0, help="seconds a fetched feed is reused")
    group.add_argument(
        "--live-max-context-tokens", type=int, default=4096, help="ceiling on the context block in the prompt"
    )


def config_from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> LiveConfig:
    return LiveConfig.from_env(
        environ,
        state_dir=getattr(args, "state_dir", None),
        allowed_hosts=tuple(args.live_allow_host or ()),
        searxng_url=args.live_searxng_url,
        x_base_url=args.live_x_base_url,
        source_timeout_s=args.live_source_timeout,
        rss_cache_ttl_s=args.live_rss_ttl,
        max_context_tokens=args.live_max_context_tokens,
    )
