"""The web app at `/` and the offline API docs at `/docs` and `/redoc`.

Everything is served from `api/web/static/` inside the package (no build step, no outside
host). The app is a plain client of the public `/v1` API. HTML responses carry their own
Content-Security-Policy, so a default CSP middleware leaves them alone:

- the app: scripts and styles from this origin only, no `unsafe-inline` at all;
- the docs: scripts from this origin only, but styles may be inline, because ReDoc
  (styled-components) and Swagger UI inject `<style>` elements at run time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.routing import APIRouter
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).resolve().parent.parent / "web" / "static"

_COMMON = (
    "default-src 'self'; connect-src 'self'; font-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
APP_CSP = f"{_COMMON}; script-src 'self'; style-src 'self'; img-src 'self' blob: data:"
DOCS_CSP = (
    f"{_COMMON}; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; worker-src 'self' blob:"
)
_HTML_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


def _page(name: str, csp: str) -> Response:
    headers = {**_HTML_HEADERS, "Content-Security-Policy": csp}
    return FileResponse(STATIC / name, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/")
async def web_app() -> Response:
    return _page("index.html", APP_CSP)


@router.get("/docs")
async def swagger_ui() -> Response:
    return _page("docs.html", DOCS_CSP)


@router.get("/redoc")
async def redoc() -> Response:
    return _page("redoc.html", DOCS_CSP)


class _StaticFiles(StaticFiles):
    """Static assets revalidated on every load, so an upgrade never mixes old and new modules."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def install(app: FastAPI) -> None:
    """Add the app, the docs pages and `/static` to ``app`` (created with docs_url=None)."""
    app.include_router(router)
    app.mount("/static", _StaticFiles(directory=STATIC), name="static")
