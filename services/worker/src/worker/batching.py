"""Micro-batching across jobs: claim queued jobs of the same model version from Postgres.

The broker still carries one message per job; whichever worker claims a job first runs
it. A job claimed here as a companion is recorded with its batching worker's name plus a
suffix, so the job's own message, delivered later to any process, finds it running
under another holder's lease (or finished) and does nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from shared.config import Settings
from shared.db.models import Job, JobImage, JobStatus, Priority
from worker import jobs


def claim_companions(
    session: Session,
    *,
    model_version_id: uuid.UUID,
    queue: str,
    max_images: int,
    worker: str,
) -> list[Job]:
    """Claim queued jobs of one model version whose images fit in ``max_images``.

    Stat jobs first, then oldest. SKIP LOCKED lets concurrent workers take disjoint
    sets, and only queued jobs are taken, so no job is claimed twice.
    """
    candidates = session.execute(
        select(Job.id, Job.image_count)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.model_version_id == model_version_id,
            Job.queue == queue,
        )
        .order_by((Job.priority == Priority.STAT).desc(), Job.created_at)
        .limit(max_images)
        .with_for_update(skip_locked=True)
    ).all()
    chosen: list[uuid.UUID] = []
    room = max_images
    for job_id, image_count in candidates:
        if image_count <= room:
            chosen.append(job_id)
            room -= image_count
    claimed: list[Job] = []
    if chosen:
        claimed = list(
            session.scalars(
                update(Job)
                .where(Job.id.in_(chosen), Job.status == JobStatus.QUEUED)
                .values(**jobs.running_values(worker))
                .returning(Job)
            ).all()
        )
    session.commit()
    return claimed


def gather(
    session: Session, settings: Settings, *, job: Job, room: int, worker: str
) -> Iterator[tuple[Job, list[JobImage]]]:
    """Companions for ``job`` with up to ``room`` pending images, waiting briefly for more.

    Yields each claimed job with its pending images. Waits at most
    ``max_batch_wait_ms`` in all, polling, while the batch is not full.
    """
    deadline = time.monotonic() + settings.max_batch_wait_ms / 1000
    holder = f"{worker} (batched with {job.id.hex[:8]})"
    while room > 0:
        claimed = claim_companions(
            session,
            model_version_id=job.model_version_id,
            queue=job.queue,
            max_images=room,
            worker=holder,
        )
        for companion in claimed:
            images = jobs.pending_images(session, companion.id)
            room -= len(images)
            yield companion, images
        remaining = deadline - time.monotonic()
        if room <= 0 or remaining <= 0:
            return
        time.sleep(min(remaining, 0.002))
