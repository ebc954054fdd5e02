"""Validation of ``search_parameters`` (xAI Live Search shape) and of ``live_search`` tools.

Errors are ``ValueError("search_parameters.<field>: problem")`` so the chat route's usual
ValueError-to-400 mapping names the field. Unknown keys are rejected rather than ignored:
a misspelt filter would otherwise silently widen the search.

``tools: [{"type": "live_search", "sources": [...], ...}]`` is accepted as another spelling
of ``search_parameters`` (mode ``auto``); the tool's other keys are the same fields.
Explicit ``search_parameters`` fields win over the tool's.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Handle = Annotated[str, Field(pattern=r"^@?[A-Za-z0-9_]{1,15}$")]
Website = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.-]+$")]
Country = Annotated[str, Field(pattern=r"^[A-Za-z]{2}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _strip_at(handles: list[str] | None) -> list[str] | None:
    return None if handles is None else [h.lstrip("@") for h in handles]


class XSourceParams(_Strict):
    type: Literal["x"]
    included_x_handles: list[Handle] | None = Field(None, max_length=10)
    excluded_x_handles: list[Handle] | None = Field(None, max_length=10)
    post_favorite_count: int | None = Field(None, ge=0)
    post_view_count: int | None = Field(None, ge=0)

    _handles = field_validator("included_x_handles", "excluded_x_handles")(_strip_at)

    @model_validator(mode="after")
    def _exclusive(self) -> XSourceParams:
        if self.included_x_handles and self.excluded_x_handles:
            raise ValueError("included_x_handles and excluded_x_handles cannot be used together")
        return self


class WebSourceParams(_Strict):
    type: Literal["web"]
    allowed_websites: list[Website] | None = Field(None, max_length=5)
    excluded_websites: list[Website] | None = Field(None, max_length=5)
    country: Country | None = None
    safe_search: bool = True

    @model_validator(mode="after")
    def _exclusive(self) -> WebSourceParams:
        if self.allowed_websites and self.excluded_websites:
            raise ValueError("allowed_websites and excluded_websites cannot be used together")
        return self


class NewsSourceParams(_Strict):
    type: Literal["news"]
    excluded_websites: list[Website] | None = Field(None, max_length=5)
    country: Country | None = None
    safe_search: bool = True


class RssSourceParams(_Strict):
    type: Literal["rss"]
    links: list[str] = Field(min_length=1, max_length=10)

    @field_validator("links")
    @classmethod
    def _http_links(cls, links: list[str]) -> list[str]:
        for link in links:
            parts = urlsplit(link)
            if parts.scheme not in {"http", "https"} or not parts.netloc:
                raise ValueError(f"{link!r} is not an absolute http(s) URL")
        return links


class LocalSourceParams(_Strict):
    """grokd's own firehose index (an extension of the xAI shape)."""

    type: Literal["local"]
    included_handles: list[Handle] | None = Field(None, max_length=10)
    excluded_handles: list[Handle] | None = Field(None, max_length=10)

    _handles = field_validator("included_handles", "excluded_handles")(_strip_at)


SourceParams = Annotated[
    XSourceParams | WebSourceParams | NewsSourceParams | RssSourceParams | LocalSourceParams,
    Field(discriminator="type"),
]
SOURCE_TYPES = ("x", "web", "news", "rss", "local")


class SearchParameters(_Strict):
    mode: Literal["off", "auto", "on"] = "auto"
    sources: list[SourceParams] | None = Field(None, max_length=10)
    from_date: date | None = None
    to_date: date | None = None
    max_search_results: int = Field(15, ge=1, le=30)
    return_citations: bool = True

    @field_validator("from_date", "to_date", mode="before")
    @classmethod
    def _iso_day(cls, value: Any) -> Any:
        if value is None or isinstance(value, date):
            return value
        if not isinstance(value, str):
            raise ValueError("expected a date string YYYY-MM-DD")
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date in YYYY-MM-DD form") from None

    @model_validator(mode="after")
    def _ordered(self) -> SearchParameters:
        if self.from_date and self.to_date and self.from_date > self.to_date:
            raise ValueError("from_date is after to_date")
        return self

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        """Inclusive UTC bounds: from the start of ``from_date`` to the end of ``to_date``."""
        start = datetime.combine(self.from_date, time.min, UTC) if self.from_date else None
        end = datetime.combine(self.to_date, time.max, UTC) if self.to_date else None
        return start, end


def _path(loc: tuple[Any, ...]) -> str:
    out = "search_parameters"
    previous: Any = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(previous, int) and part in SOURCE_TYPES:
            pass  # pydantic puts the union tag in the location; it is not a field
        else:
            out += f".{part}"
        previous = part
    return out


def parse_search_parameters(value: Any) -> SearchParameters:
    """Validate a ``search_parameters`` value; raises ValueError naming the first bad field."""
    if isinstance(value, SearchParameters):
        return value
    if isinstance(value, BaseModel):  # e.g. the HTTP layer's lenient protocol model
        value = value.model_dump(exclude_unset=True)
    if not isinstance(value, dict):
        raise ValueError("search_parameters: expected an object")
    try:
        return SearchParameters.model_validate(value)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ValueError(f"{_path(tuple(err.get('loc', ())))}: {message}") from None


def split_live_search_tools(tools: list[Any] | None) -> tuple[list[Any] | None, dict[str, Any] | None]:
    """Separate ``live_search`` tools from function tools: (remaining tools, search_parameters dict)."""
    if not tools:
        return tools, None
    remaining, found = [], None
    for index, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else getattr(tool, "type", None)
        if kind != "live_search":
            remaining.append(tool)
            continue
        if found is not None:
            raise ValueError(f"tools[{index}]: only one live_search tool is allowed")
        if not isinstance(tool, dict):
            tool = tool.model_dump(exclude_none=True) if hasattr(tool, "model_dump") else dict(tool)
        found = {k: v for k, v in tool.items() if k != "type"}
        found.setdefault("mode", "auto")
    return remaining or None, found


def resolve(
    search_parameters: Any, tools: list[Any] | None = None
) -> tuple[SearchParameters | None, list[Any] | None]:
    """The request's effective live-search settings (None when it asked for none) and the tools
    left for the model. Call once per chat request, before building the prompt."""
    remaining, from_tool = split_live_search_tools(tools)
    if search_parameters is None and from_tool is None:
        return None, remaining
    merged: dict[str, Any] = dict(from_tool or {})
    if isinstance(search_parameters, BaseModel):
        search_parameters = search_parameters.model_dump(exclude_unset=True)
    if search_parameters is not None:
        if not isinstance(search_parameters, dict):
            raise ValueError("search_parameters: expected an object")
        merged.update(search_parameters)
    return parse_search_parameters(merged), remaining
