"""GET /v1/chat/deferred-completion/{request_id}: 202 while pending, the answer once, then 404."""

from __future__ import annotations

from fastapi import APIRouter, Response

from grokd.server.jobs.deps import JobsDep
from grokd.server.jobs.tenancy import TenantDep

router = APIRouter()


@router.get("/v1/chat/deferred-completion/{request_id}")
async def get_deferred_completion(request_id: str, jobs: JobsDep, tenant: TenantDep) -> Response:
    return jobs.deferred.fetch(request_id, tenant.scope)
