"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.concurrency import run_in_threadpool

from shared.db.migrate import current_revisions, head_revisions

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


async def _database(request: Request) -> str:
    async with request.app.state.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        current = await conn.run_sync(current_revisions)
    heads = head_revisions()
    if current == heads:
        return "ok"
    return f"migrations at {sorted(current)}, expected {sorted(heads)}"


def _broker(request: Request) -> str:
    with request.app.state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Database reachable with migrations at head, and broker reachable."""
    checks: dict[str, str] = {}
    for name, probe in (
        ("database", _database(request)),
        ("broker", run_in_threadpool(_broker, request)),
    ):
        try:
            checks[name] = await asyncio.wait_for(probe, timeout=3)
        except Exception as exc:  # any failure means "not ready", reported by name
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not ready", "checks": checks},
        status_code=200 if ready else 503,
    )
