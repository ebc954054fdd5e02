"""Small text helpers shared by sources and retrieval: keywords, HTML to text, overlap, URL keys.

Keywords are runs of letters/digits only, so they can be embedded in X, FTS5 or SearXNG
queries without any escaping concerns.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_WORD = re.compile(r"[^\W_]+", re.UNICODE)

STOPWORDS = frozenset(
    """a about above after again all also am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further had has have having
    he her here hers him his how i if in into is it its itself just me more most my no nor not now of
    off on once only or other our ours out over own same she should so some such than that the their
    theirs them then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours tell give show please know
    let lets us get got say said says think thing things anything something really latest recent
    recently today tonight yesterday news happening going new current currently right""".split()
)


def keywords(text: str, limit: int = 12) -> list[str]:
    """Distinct lower-case content words of ``text`` in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _WORD.finditer(text.lower()):
        word = match.group(0)
        if word in STOPWORDS or (len(word) < 2 and not word.isdigit()):
            continue
        seen.setdefault(word, None)
        if len(seen) >= limit:
            break
    return list(seen)


def words(text: str) -> set[str]:
    return {m.group(0) for m in _WORD.finditer(text.lower())}


def overlap(terms: tuple[str, ...] | list[str], text: str) -> float:
    """Fraction of ``terms`` that occur as words in ``text`` (0 when there are no terms)."""
    if not terms:
        return 0.0
    present = words(text)
    return sum(1 for t in terms if t in present) / len(terms)


class _TextExtractor(HTMLParser):
    _SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skip += 1
        elif tag in {"br", "p", "div", "li"}:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML fragment, whitespace collapsed (feeds put HTML in summaries)."""
    if "<" not in markup:
        return " ".join(unescape(markup).split())
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return " ".join("".join(parser.parts).split())


_TRACKING = ("utm_", "fbclid", "gclid", "ref_src", "s", "t")


def url_key(url: str) -> str:
    """A normalised form of ``url`` for de-duplication (scheme/host case, fragment, tracking
    parameters, trailing slash, twitter.com vs x.com)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    host = (parts.hostname or "").lower()
    if host.startswith("www."):
        host = host[4:]
    if host in {"twitter.com", "mobile.twitter.com", "mobile.x.com"}:
        host = "x.com"
    port = f":{parts.port}" if parts.port else ""
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not (k.startswith("utm_") or (host == "x.com" and k in _TRACKING) or k in {"fbclid", "gclid"})
    ]
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(
        (
            "https" if parts.scheme in {"http", "https"} else parts.scheme,
            host + port,
            path,
            urlencode(query),
            "",
        )
    )


def host_matches(host: str, domains: tuple[str, ...]) -> bool:
    """Whether ``host`` is one of ``domains`` or a subdomain of one."""
    host = host.lower().rstrip(".")
    for domain in domains:
        d = domain.lower().strip().rstrip(".")
        if d.startswith("www."):
            d = d[4:]
        if host == d or host.endswith("." + d):
            return True
    return False
