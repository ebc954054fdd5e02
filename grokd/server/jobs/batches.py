"""``/v1/batches``: create (validated in the background), retrieve, list, cancel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from grokd.server.errors import APIError, invalid_request
from grokd.server.jobs.config import BATCH_ENDPOINTS, COMPLETION_WINDOWS
from grokd.server.jobs.deps import JobsDep
from grokd.server.jobs.objects import batch_object, list_page
from grokd.server.jobs.service import JobsService
from grokd.server.jobs.tenancy import Tenant, TenantDep

MAX_METADATA_KEYS = 16

router = APIRouter()


class CreateBatchRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    # documented exactly (OpenAPI), checked in create_batch with messages naming the field
    input_file_id: str = Field(json_schema_extra={"minLength": 1})
    endpoint: str = Field(json_schema_extra={"enum": list(BATCH_ENDPOINTS)})
    completion_window: str = Field(json_schema_extra={"enum": list(COMPLETION_WINDOWS)})
    metadata: dict[str, Any] | None = Field(default=None, json_schema_extra={"maxProperties": MAX_METADATA_KEYS})


def batch_not_found(batch_id: str) -> APIError:
    return APIError(404, f"No such batch: {batch_id!r}", type="not_found_error", code="batch_not_found",
                    param="batch_id")


def _render(jobs: JobsService, row: dict) -> dict:
    return batch_object(row, jobs.store.line_counts(row["id"]))


@router.post("/v1/batches")
def create_batch(req: CreateBatchRequest, jobs: JobsDep, tenant: TenantDep) -> dict:
    store = jobs.store
    if req.endpoint not in BATCH_ENDPOINTS:
        raise invalid_request(f"endpoint must be one of {list(BATCH_ENDPOINTS)}, got {req.endpoint!r}",
                              param="endpoint")
    window = jobs.config.completion_windows.get(req.completion_window)
    if window is None:
        raise invalid_request(
            f"completion_window must be one of {list(jobs.config.completion_windows)}, "
            f"got {req.completion_window!r}",
            param="completion_window",
        )
    if req.metadata is not None and len(req.metadata) > MAX_METADATA_KEYS:
        raise invalid_request(f"metadata may hold at most {MAX_METADATA_KEYS} keys", param="metadata")
    file = store.get_file(req.input_file_id)
    if file is None or not tenant.sees(file["owner"]):
        raise APIError(404, f"No such file: {req.input_file_id!r}", type="not_found_error",
                       code="file_not_found", param="input_file_id")
    if file["purpose"] != "batch":
        raise invalid_request(f"input file {req.input_file_id!r} has purpose {file['purpose']!r}, not 'batch'",
                              param="input_file_id")
    row = store.create_batch(req.input_file_id, req.endpoint, req.completion_window, window, req.metadata,
                             owner=tenant.owner)
    jobs.runner.notify()
    return _render(jobs, row)


@router.get("/v1/batches")
def list_batches(jobs: JobsDep, tenant: TenantDep, limit: int = Query(20, ge=1, le=100),
                 after: str | None = None) -> dict:
    rows = jobs.store.list_batches(limit=limit + 1, after=after, owner=tenant.scope)
    return list_page(rows, limit, lambda r: _render(jobs, r))


def owned_batch(jobs: JobsService, tenant: Tenant, batch_id: str) -> dict:
    """The batch's row if ``tenant`` may see it; 404 for a missing batch and another key's alike."""
    row = jobs.store.get_batch(batch_id)
    if row is None or not tenant.sees(row["owner"]):
        raise batch_not_found(batch_id)
    return row


@router.get("/v1/batches/{batch_id}")
def retrieve_batch(batch_id: str, jobs: JobsDep, tenant: TenantDep) -> dict:
    return _render(jobs, owned_batch(jobs, tenant, batch_id))


@router.post("/v1/batches/{batch_id}/cancel")
def cancel_batch(batch_id: str, jobs: JobsDep, tenant: TenantDep) -> dict:
    owned_batch(jobs, tenant, batch_id)
    row = jobs.store.request_cancel(batch_id)
    if row is None:
        raise batch_not_found(batch_id)
    if row["status"] not in ("cancelling", "cancelled"):
        raise invalid_request(f"Cannot cancel a batch with status {row['status']!r}", param="batch_id",
                              code="invalid_state")
    jobs.runner.notify()
    return _render(jobs, row)
