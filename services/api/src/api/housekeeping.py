"""Periodic clean-up inside the API process: expire idempotency records.

Idempotency records hold the first response to a POST (job ids, sometimes a problem body)
so that a client's retry gets it back; past MEDIMG_IDEMPOTENCY_TTL_HOURS a retry is no
longer a retry, and keeping them forever only grows the table. Deletes run in bounded
batches (short transactions on the `created_at` index); several replicas deleting at the
same time is harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.config import Settings
from shared.db.models import IdempotencyRecord

log = logging.getLogger(__name__)
BATCH = 5000


async def expire_idempotency_records(
    sessionmaker: async_sessionmaker[AsyncSession], ttl: timedelta
) -> int:
    """Delete records created more than `ttl` ago; returns how many were deleted."""
    total = 0
    while True:
        expired = (
            select(IdempotencyRecord.id)
            .where(IdempotencyRecord.created_at < func.now() - ttl)
            .limit(BATCH)
        )
        async with sessionmaker() as session:
            result = await session.execute(
                delete(IdempotencyRecord)
                .where(IdempotencyRecord.id.in_(expired.scalar_subquery()))
                .returning(IdempotencyRecord.id)
            )
            deleted = len(result.all())
            await session.commit()
        total += deleted
        if deleted < BATCH:
            return total


async def run_forever(
    *, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    ttl = timedelta(hours=settings.idempotency_ttl_hours)
    while True:
        try:
            deleted = await expire_idempotency_records(sessionmaker, ttl)
        except Exception as exc:  # database down: the next round tries again
            log.warning("idempotency clean-up failed: %s: %s", type(exc).__name__, exc)
        else:
            if deleted:
                log.info("expired idempotency records", extra={"deleted": deleted})
        await asyncio.sleep(settings.idempotency_cleanup_seconds)


def start(app: FastAPI) -> asyncio.Task[None]:
    state = app.state
    return asyncio.create_task(
        run_forever(sessionmaker=state.sessionmaker, settings=state.settings),
        name="idempotency-expiry",
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
