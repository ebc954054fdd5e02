"""``/v1/files``: multipart upload of batch inputs, listing, retrieval, content, deletion."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from starlette.datastructures import UploadFile

from grokd.server.errors import APIError, invalid_request
from grokd.server.jobs.deps import JobsDep
from grokd.server.jobs.objects import file_object, list_page
from grokd.server.jobs.service import JobsService
from grokd.server.jobs.tenancy import Tenant, TenantDep
from grokd.server.jobs.validation import looks_like_jsonl

UPLOAD_PURPOSES = ("batch",)
CHUNK = 1 << 20
MULTIPART_SLACK = 64 * 1024  # headers and boundaries around the file part


def too_large(limit: int) -> APIError:
    return APIError(413, f"File is larger than the {limit}-byte limit", code="file_too_large", param="file")


def file_not_found(file_id: str) -> APIError:
    return APIError(404, f"No such file: {file_id!r}", type="not_found_error", code="file_not_found",
                    param="file_id")


async def _spool(upload: UploadFile, dest: Path, limit: int) -> int:
    """Copy an upload to ``dest`` (fsynced), refusing more than ``limit`` bytes."""
    size = 0
    with open(dest, "wb") as fh:
        while chunk := await upload.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            fh.write(chunk)
        fh.flush()
        os.fsync(fh.fileno())
    return size


router = APIRouter()


@router.post("/v1/files")
async def upload_file(request: Request, jobs: JobsDep, tenant: TenantDep) -> dict:
    store, max_upload_bytes = jobs.store, jobs.config.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_upload_bytes + MULTIPART_SLACK:
        raise too_large(max_upload_bytes)
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise invalid_request("Uploads must be multipart/form-data with `file` and `purpose`", param="file")
    form = await request.form(max_files=1, max_fields=8)
    try:
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose not in UPLOAD_PURPOSES:
            raise invalid_request(f"purpose must be one of {list(UPLOAD_PURPOSES)}, got {purpose!r}",
                                  param="purpose")
        if not isinstance(upload, UploadFile):
            raise invalid_request("missing multipart field `file`", param="file")
        tmp = store.temp_upload_path()
        try:
            await _spool(upload, tmp, max_upload_bytes)
            problem = await asyncio.to_thread(lambda: looks_like_jsonl(tmp.read_bytes()))
            if problem:
                raise invalid_request(f"Invalid batch input: {problem}", param="file", code="invalid_file")
            row = await asyncio.to_thread(store.adopt_file, tmp, upload.filename or "upload.jsonl", purpose,
                                          tenant.owner)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        await form.close()
    return file_object(row)


@router.get("/v1/files")
def list_files(
    jobs: JobsDep,
    tenant: TenantDep,
    purpose: str | None = None,
    limit: int = Query(10000, ge=1, le=10000),
    after: str | None = None,
    order: str = Query("desc", pattern="^(asc|desc)$"),
) -> dict:
    store = jobs.store
    rows = store.list_files(purpose=purpose, limit=limit + 1, after=after, order=order, owner=tenant.scope)
    return list_page(rows, limit, file_object)


def owned_file(jobs: JobsService, tenant: Tenant, file_id: str) -> dict:
    """The file's row if ``tenant`` may see it; 404 for a missing file and for another key's alike."""
    row = jobs.store.get_file(file_id)
    if row is None or not tenant.sees(row["owner"]):
        raise file_not_found(file_id)
    return row


@router.get("/v1/files/{file_id}")
def retrieve_file(file_id: str, jobs: JobsDep, tenant: TenantDep) -> dict:
    return file_object(owned_file(jobs, tenant, file_id))


@router.delete("/v1/files/{file_id}")
def delete_file(file_id: str, jobs: JobsDep, tenant: TenantDep) -> dict:
    owned_file(jobs, tenant, file_id)
    if not jobs.store.delete_file(file_id):
        raise file_not_found(file_id)
    return {"id": file_id, "object": "file", "deleted": True}


@router.get("/v1/files/{file_id}/content")
def file_content(file_id: str, jobs: JobsDep, tenant: TenantDep) -> FileResponse:
    store = jobs.store
    row = owned_file(jobs, tenant, file_id)
    if not store.file_path(file_id).exists():
        raise file_not_found(file_id)
    return FileResponse(store.file_path(file_id), media_type="application/octet-stream",
                        filename=row["filename"])
