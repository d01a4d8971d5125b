"""Periodic clean-up inside the API process: expire idempotency records, apply each
tenant's retention period, sweep orphan blobs.

Idempotency records hold the first response to a POST (job ids, sometimes a problem body)
so that a client's retry gets it back; past MEDIMG_IDEMPOTENCY_TTL_HOURS a retry is no
longer a retry, and keeping them forever only grows the table. Deletes run in bounded
batches (short transactions on the `created_at` index); several replicas deleting at the
same time is harmless.

Retention deletes final jobs older than their tenant's `retention_days` (and DICOM studies
that made no job) through shared.deletion, a batch of jobs per transaction, each audited;
replicas skip the jobs another one has locked. The orphan sweep removes blobs no row
references once they are past the grace period (shared.deletion.sweep_orphan_blobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import checkpoint_retention
from shared import deletion
from shared.config import Settings
from shared.db.models import IdempotencyRecord
from shared.storage import BlobStore

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


RETENTION_BATCH = 100


async def apply_retention(
    sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, grace: float
) -> int:
    """Delete expired jobs (batch by batch, rows then blobs) and studies; returns jobs deleted."""
    total = 0
    async with sessionmaker() as session:
        studies = await session.run_sync(deletion.expire_studies)
        await session.commit()
    while True:
        async with sessionmaker() as session:
            ids = await session.run_sync(lambda s: deletion.expired_jobs(s, limit=RETENTION_BATCH))
            if not ids:
                break
            deleted = await session.run_sync(
                lambda s, ids=ids: deletion.delete_jobs(
                    s, ids, actor=deletion.Actor(), reason="retention"
                )
            )
            await session.commit()
            await deletion.remove_blobs_async(session, store, deleted.blob_keys, grace=grace)
        total += len(ids)
        if len(ids) < RETENTION_BATCH:
            break
    if total or studies.rows:
        log.info("retention", extra={"jobs": total, "studies": studies.rows})
    return total


async def sweep_orphans(
    sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, grace: float
) -> int:
    async with sessionmaker() as session:
        removed = await session.run_sync(
            lambda s: deletion.sweep_orphan_blobs(s, store, grace=grace)
        )
        await session.rollback()
    if removed:
        log.info("removed orphan blobs", extra={"removed": removed})
    return removed


async def run_forever(
    *, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, store: BlobStore
) -> None:
    ttl = timedelta(hours=settings.idempotency_ttl_hours)
    grace = deletion.grace_seconds(settings)
    last_sweep = time.monotonic()  # not at start-up: a restart loop must not walk the store
    while True:
        try:
            deleted = await expire_idempotency_records(sessionmaker, ttl)
        except Exception as exc:  # database down: the next round tries again
            log.warning("idempotency clean-up failed: %s: %s", type(exc).__name__, exc)
        else:
            if deleted:
                log.info("expired idempotency records", extra={"deleted": deleted})
        try:
            await apply_retention(sessionmaker, store, grace)
            await checkpoint_retention.drop_final_checkpoints(sessionmaker, store, grace)
            if time.monotonic() - last_sweep >= settings.orphan_sweep_seconds:
                last_sweep = time.monotonic()
                await sweep_orphans(sessionmaker, store, grace)
        except Exception as exc:  # the next round tries again; nothing is half-deleted
            log.warning("retention/orphan sweep failed: %s: %s", type(exc).__name__, exc)
        await asyncio.sleep(settings.idempotency_cleanup_seconds)


def start(app: FastAPI) -> asyncio.Task[None]:
    state = app.state
    return asyncio.create_task(
        run_forever(sessionmaker=state.sessionmaker, settings=state.settings, store=state.store),
        name="housekeeping",
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
