"""Job state transitions, written so a task that runs twice stores one result per image.

Every transition is a conditional UPDATE on the job row: a cancelled or finished job
is never moved back, and an image that already has a result is never written again.

A claim is a lease: the claiming worker holds the job until `lease_expires_at`, renewed
after every batch. A redelivered task takes over a running job only when that lease has
expired (its worker died) or when it runs on the same worker node (a child process died
and its own node redelivered the task). Each claim counts an attempt; past
`max_attempts` the job fails as `attempts-exceeded` instead of looping forever.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, case, func, select, update
from sqlalchemy.orm import Session

from shared import job_state, leases
from shared.callbacks import OwnerKind, enqueue_callbacks
from shared.config import get_settings
from shared.db.base import utcnow
from shared.db.models import ImageStatus, Job, JobImage, JobStatus
from shared.errors import AppError, AttemptsExceeded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageOutcome:
    image_id: uuid.UUID
    latency_ms: float
    output: dict[str, Any] | None = None
    error: AppError | None = None


def _lease_s() -> float:
    return float(get_settings().job_lease_seconds)


def running_values(worker: str) -> dict[str, Any]:
    """What a claim sets: by claim() and by micro-batching (worker.batching) alike."""
    return leases.claim_values(Job, worker, _lease_s())


def claim(session: Session, job_id: uuid.UUID, worker: str) -> Job | None:
    """Take a queued job, or a running one whose lease expired or that this node held.

    Returns:
        The running job, leased to `worker`; None when there is nothing to do: the job is
        finished or cancelled, another live worker holds it (the reconciler re-sends it if
        that lease expires), or it has used up its attempts (then it is failed here).
    """
    job: Job | None = session.scalar(leases.claim_statement(Job, job_id, worker, _lease_s()))
    session.commit()
    if job is None:
        return None
    limit = get_settings().max_attempts
    if job.attempts > limit:
        log.warning("job %s claimed %d times; failing it", job_id, job.attempts)
        fail(session, job_id, AttemptsExceeded(limit))
        return None
    return job


def pending_images(session: Session, job_id: uuid.UUID) -> list[JobImage]:
    return list(
        session.scalars(
            select(JobImage)
            .where(JobImage.job_id == job_id, JobImage.status == ImageStatus.PENDING)
            .order_by(JobImage.index)
        ).all()
    )


def is_running(session: Session, job_id: uuid.UUID) -> bool:
    """Whether the job is still running (not cancelled); renews its lease if so.

    Called between batches, so a live worker keeps its lease and a dead one loses it.
    """
    return leases.renew(session, Job, job_id, _lease_s())


def save_outcomes(session: Session, outcomes: list[ImageOutcome]) -> None:
    """Store a chunk's results in one executemany round trip; never overwrite a result."""
    if not outcomes:
        return
    table = cast(Table, JobImage.__table__)
    statement = (
        update(table)
        .where(table.c.id == bindparam("image_id"), table.c.status == ImageStatus.PENDING)
        .values(
            status=bindparam("new_status"),
            output=bindparam("new_output"),
            error_type=bindparam("new_error_type"),
            error_detail=bindparam("new_error_detail"),
            latency_ms=bindparam("new_latency_ms"),
            finished_at=bindparam("new_finished_at"),
        )
    )
    now = utcnow()
    session.connection().execute(
        statement,
        [
            {
                "image_id": o.image_id,
                "new_status": ImageStatus.FAILED if o.error else ImageStatus.SUCCEEDED,
                "new_output": o.output,
                "new_error_type": o.error.type if o.error else None,
                "new_error_detail": o.error.detail if o.error else None,
                "new_latency_ms": round(o.latency_ms, 3),
                "new_finished_at": now,
            }
            for o in outcomes
        ],
    )


def finish(session: Session, job_id: uuid.UUID) -> tuple[str, float] | None:
    """Succeeded if any image has a result; failed (with the first image error) if none has.

    Returns:
        The final status and the job's end-to-end seconds, or None if the job was no
        longer running (cancelled meanwhile).
    """
    ok, failed, first_error, first_detail = session.execute(
        select(
            func.count(case((JobImage.status == ImageStatus.SUCCEEDED, 1))),
            func.count(case((JobImage.status == ImageStatus.FAILED, 1))),
            func.min(JobImage.error_type),
            func.min(JobImage.error_detail),
        ).where(JobImage.job_id == job_id)
    ).one()
    values: dict[str, Any] = {"finished_at": utcnow(), "lease_expires_at": None}
    if ok:
        values["status"] = JobStatus.SUCCEEDED
    else:
        values.update(
            status=JobStatus.FAILED,
            error_type=first_error or "internal-error",
            error_detail=f"all {failed} image(s) failed; first error: {first_detail}",
        )
    row = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(**values)
        .returning(Job.status, Job.created_at, Job.finished_at, Job.callback_url)
    ).first()
    if row is not None and row.callback_url:  # outbox row, same transaction as the status
        enqueue_callbacks(session, OwnerKind.JOB, [job_id])
    session.commit()
    return None if row is None else (row.status, (row.finished_at - row.created_at).total_seconds())


def fail(session: Session, job_id: uuid.UUID, error: AppError) -> None:
    job_state.fail_one(session, Job, job_id, error)
    session.commit()
