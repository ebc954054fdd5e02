"""The sampler lab page: plain static files (``grokd/server/ui/static``: one HTML page, one ES
module, one stylesheet; no build step) served at ``/`` and ``/ui/...`` unless ``--no-ui``.

The page holds no secret: it talks to the same API as any client, and an API key typed into it
stays in the browser's ``sessionStorage``. Responses carry a restrictive Content-Security-Policy
(scripts and styles only from this origin, requests only to this origin)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "ui" / "static"
ASSETS_PATH = "/ui"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html",
                        headers={"content-security-policy": CSP, "cache-control": "no-cache"})


def mount(app: FastAPI) -> None:
    """Serve the page at ``/`` and its assets under ``/ui``."""
    app.include_router(router)
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="ui")
