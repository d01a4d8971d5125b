"""Remove the resume checkpoints of training jobs that have ended (a housekeeping step).

A checkpoint (`training_job.checkpoint_key`: weights, optimiser, scheduler and RNG state,
often hundreds of MB) exists so that a job taken over after its trainer died resumes
where it stopped. Once the job is succeeded, failed or cancelled nothing resumes it, yet
a failed or cancelled job used to keep its last checkpoint for ever. Each round clears
the key of final jobs, a batch per transaction (rows locked SKIP LOCKED, so API replicas
split the work), then removes the blobs no row references any more through
shared.deletion (reference-counted; a blob younger than the grace period is left to the
orphan sweep).
"""

from __future__ import annotations

import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import deletion
from shared.db.models import JobStatus, TrainingJob
from shared.storage import BlobStore

log = logging.getLogger(__name__)
BATCH = 100
FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


async def drop_final_checkpoints(
    sessionmaker: async_sessionmaker[AsyncSession], store: BlobStore, grace: float
) -> int:
    """Clear and remove the checkpoints of final training jobs; returns how many jobs."""
    total = 0
    while True:
        async with sessionmaker() as session:
            rows = (
                await session.execute(
                    select(TrainingJob.id, TrainingJob.checkpoint_key)
                    .where(TrainingJob.status.in_(FINAL), TrainingJob.checkpoint_key.is_not(None))
                    .limit(BATCH)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                break
            await session.execute(
                update(TrainingJob)
                .where(TrainingJob.id.in_([r.id for r in rows]))
                .values(checkpoint_key=None)
            )
            await session.commit()
            keys = {r.checkpoint_key for r in rows if r.checkpoint_key}
            await deletion.remove_blobs_async(session, store, keys, grace=grace)
        total += len(rows)
        if len(rows) < BATCH:
            break
    if total:
        log.info("removed checkpoints of final training jobs", extra={"jobs": total})
    return total
