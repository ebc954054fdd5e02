"""search_parameters validation and live_search tool conversion."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from grokd.server.live.params import parse_search_parameters, resolve, split_live_search_tools


def test_defaults() -> None:
    p = parse_search_parameters({})
    assert (p.mode, p.sources, p.max_search_results, p.return_citations) == ("auto", None, 15, True)


def test_full_shape() -> None:
    p = parse_search_parameters(
        {
            "mode": "on",
            "sources": [
                {
                    "type": "x",
                    "included_x_handles": ["@xai", "grok"],
                    "post_favorite_count": 10,
                    "post_view_count": 100,
                },
                {"type": "web", "allowed_websites": ["example.com"], "country": "DE", "safe_search": False},
                {"type": "news", "excluded_websites": ["tabloid.example"]},
                {"type": "rss", "links": ["https://feeds.example/rss"]},
                {"type": "local"},
            ],
            "from_date": "2026-11-01",
            "to_date": "2026-11-25",
            "max_search_results": 30,
            "return_citations": False,
        }
    )
    assert p.sources[0].included_x_handles == ["xai", "grok"]
    assert p.from_date == date(2026, 11, 1)
    start, end = p.time_range()
    assert start == datetime(2026, 11, 1, tzinfo=UTC) and end.date() == date(2026, 11, 25) and end.hour == 23


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"mode": "sometimes"}, "search_parameters.mode:"),
        ({"max_search_results": 0}, "search_parameters.max_search_results:"),
        ({"max_search_results": 31}, "search_parameters.max_search_results:"),
        ({"from_date": "25/11/2026"}, "search_parameters.from_date: '25/11/2026' is not a date"),
        ({"from_date": "2026-11-25", "to_date": "2026-11-01"}, "from_date is after to_date"),
        ({"sources": [{"type": "carrier-pigeon"}]}, "search_parameters.sources[0]:"),
        (
            {"sources": [{"type": "x", "post_favorite_count": -1}]},
            "search_parameters.sources[0].post_favorite_count:",
        ),
        (
            {"sources": [{"type": "x", "included_x_handles": ["a"], "excluded_x_handles": ["b"]}]},
            "cannot be used together",
        ),
        (
            {"sources": [{"type": "x", "included_x_handles": ["bad handle!"]}]},
            "search_parameters.sources[0].included_x_handles[0]:",
        ),
        (
            {"sources": [{"type": "web", "alowed_websites": ["a.com"]}]},
            "search_parameters.sources[0].alowed_websites:",
        ),
        (
            {"sources": [{"type": "rss", "links": ["file:///etc/passwd"]}]},
            "search_parameters.sources[0].links:",
        ),
        ({"sources": [{"type": "rss", "links": []}]}, "search_parameters.sources[0].links:"),
        ({"surprise": 1}, "search_parameters.surprise:"),
    ],
)
def test_errors_name_the_field(body, message) -> None:
    with pytest.raises(ValueError) as info:
        parse_search_parameters(body)
    assert message in str(info.value)


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="search_parameters: expected an object"):
        parse_search_parameters(["x"])


def test_live_search_tool_is_split_off() -> None:
    fn = {"type": "function", "function": {"name": "f", "parameters": {}}}
    tools, params = split_live_search_tools([fn, {"type": "live_search", "sources": [{"type": "x"}]}])
    assert tools == [fn] and params == {"sources": [{"type": "x"}], "mode": "auto"}
    resolved, remaining = resolve(None, [{"type": "live_search", "sources": [{"type": "local"}]}])
    assert remaining is None and resolved.mode == "auto" and resolved.sources[0].type == "local"


def test_explicit_search_parameters_win_over_tool() -> None:
    resolved, _ = resolve(
        {"mode": "on"}, [{"type": "live_search", "sources": [{"type": "x"}], "mode": "off"}]
    )
    assert resolved.mode == "on" and resolved.sources[0].type == "x"


def test_nothing_requested() -> None:
    assert resolve(None, None) == (None, None)


def test_two_live_search_tools_rejected() -> None:
    with pytest.raises(ValueError, match=r"tools\[1\]"):
        split_live_search_tools([{"type": "live_search"}, {"type": "live_search"}])
