"""How a request handler finds the JobsService: the server state's ``jobs`` field, set once
while the app is built (``server.app.create_app``) — no module-level state."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from grokd.server.errors import not_configured
from grokd.server.jobs.service import JobsService
from grokd.server.routes.deps import get_state


def get_jobs(request: Request) -> JobsService:
    jobs = get_state(request).jobs
    if jobs is None:
        raise not_configured("Files, batches and deferred completions need --state-dir", "jobs_disabled")
    return jobs


# Handlers take ``jobs: JobsDep``.
JobsDep = Annotated[JobsService, Depends(get_jobs)]
