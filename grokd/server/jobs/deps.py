"""How a request handler finds the JobsService: ``app.state.jobs`` (or the server state's
``extras["jobs"]``), set once at startup — no module-level state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request

from grokd.server.errors import APIError

if TYPE_CHECKING:
    from grokd.server.jobs.service import JobsService


def get_jobs(request: Request) -> JobsService:
    jobs = getattr(request.app.state, "jobs", None)
    if jobs is None:
        server = getattr(request.app.state, "server", None)
        jobs = getattr(server, "extras", {}).get("jobs") if server is not None else None
    if jobs is None:
        raise APIError(503, "Files, batches and deferred completions need --state-dir", type="server_error",
                       code="jobs_disabled")
    return jobs


# Handlers take ``jobs: JobsDep``. Typed ``Any`` because FastAPI resolves annotations at import
# time and the service module imports the routers (a string forward reference would not resolve).
JobsDep = Annotated[Any, Depends(get_jobs)]
