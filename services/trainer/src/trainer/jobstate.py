"""Training-job state transitions: conditional UPDATEs, so a cancelled job stays cancelled.

A claim takes a lease (`lease_expires_at`) that every progress write renews. A second
delivery of the same job (broker redelivery after the visibility timeout) finds a live
lease held by another worker and backs off; a delivery after the holder died (its lease
ran out, or the same worker node restarted its process) takes the job over and resumes
from `checkpoint_key`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.callbacks import OwnerKind, enqueue_callbacks
from shared.db.base import utcnow
from shared.db.models import JobStatus, TrainingEpoch, TrainingJob
from shared.errors import AppError

_ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True)
class Busy:
    """Another live worker holds the job; retry after ``seconds``."""

    seconds: float


def claim(
    session: Session, job_id: uuid.UUID, worker: str, lease_s: float
) -> TrainingJob | Busy | None:
    """Take the job: queued, or running under an expired lease or on this same worker node.

    Returns:
        The claimed job (attempts incremented), Busy when another live worker holds it,
        or None when it is finished or cancelled (nothing to do).
    """
    now = utcnow()
    job = session.scalar(
        update(TrainingJob)
        .where(
            TrainingJob.id == job_id,
            or_(
                TrainingJob.status == JobStatus.QUEUED,
                and_(
                    TrainingJob.status == JobStatus.RUNNING,
                    or_(
                        TrainingJob.lease_expires_at.is_(None),
                        TrainingJob.lease_expires_at < now,
                        TrainingJob.worker == worker,
                    ),
                ),
            ),
        )
        .values(
            status=JobStatus.RUNNING,
            started_at=func.coalesce(TrainingJob.started_at, func.now()),
            attempts=TrainingJob.attempts + 1,
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
        )
        .returning(TrainingJob)
    )
    if job is not None:
        session.commit()
        return job
    session.rollback()
    row = session.execute(
        select(TrainingJob.status, TrainingJob.lease_expires_at).where(TrainingJob.id == job_id)
    ).first()
    if row is None or row.status not in _ACTIVE:
        return None
    remaining = (row.lease_expires_at - now).total_seconds() if row.lease_expires_at else 1.0
    return Busy(max(1.0, remaining))


def _lease(lease_s: float) -> Any:
    return utcnow() + timedelta(seconds=lease_s)


def _running(job_id: uuid.UUID, worker: str) -> Any:
    """Still running and still ours: a worker whose job was taken over stops writing."""
    return and_(
        TrainingJob.id == job_id,
        TrainingJob.status == JobStatus.RUNNING,
        TrainingJob.worker == worker,
    )


def report_progress(
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    progress: dict[str, Any] | None,
    lease_s: float,
) -> bool:
    """Store progress (None: keep it) and renew the lease; False when no longer ours."""
    values: dict[str, Any] = {"lease_expires_at": _lease(lease_s)}
    if progress is not None:
        values["progress"] = progress
    row = session.execute(
        update(TrainingJob)
        .where(_running(job_id, worker))
        .values(**values)
        .returning(TrainingJob.id)
    ).first()
    session.commit()
    return row is not None


def record_epoch(
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    epoch: dict[str, Any],
    progress: dict[str, Any],
    checkpoint_key: str,
    lease_s: float,
) -> bool:
    """The epoch's row, progress and checkpoint, in one transaction: an epoch is recorded
    exactly when its checkpoint is, so a resumed job neither repeats nor skips one.

    Returns:
        False (nothing written) when the job is no longer running.
    """
    row = session.execute(
        update(TrainingJob)
        .where(_running(job_id, worker))
        .values(progress=progress, checkpoint_key=checkpoint_key, lease_expires_at=_lease(lease_s))
        .returning(TrainingJob.id)
    ).first()
    if row is None:
        session.rollback()
        return False
    session.execute(
        insert(TrainingEpoch)
        .values(id=uuid.uuid4(), training_job_id=job_id, created_at=utcnow(), **epoch)
        .on_conflict_do_nothing(index_elements=["training_job_id", "fold", "epoch"])
    )
    session.commit()
    return True


def succeed(
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    *,
    test_metrics: dict[str, Any],
    model_version_id: uuid.UUID,
    promoted: bool | None,
    progress: dict[str, Any],
) -> bool:
    """Final success, in the caller's transaction with the registration (not committed)."""
    row = session.execute(
        update(TrainingJob)
        .where(_running(job_id, worker))
        .values(
            status=JobStatus.SUCCEEDED,
            test_metrics=test_metrics,
            result_model_version_id=model_version_id,
            promoted=promoted,
            progress=progress,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .returning(TrainingJob.id)
    ).first()
    enqueue_callbacks(session, OwnerKind.TRAINING_JOB, [job_id])  # outbox, same transaction
    return row is not None


def fail(session: Session, job_id: uuid.UUID, error: AppError, worker: str | None = None) -> None:
    """Fail a queued or running job (only while ``worker`` still holds it, when given)."""
    ours = TrainingJob.worker == worker if worker is not None else True
    session.execute(
        update(TrainingJob)
        .where(TrainingJob.id == job_id, TrainingJob.status.in_(_ACTIVE), ours)
        .values(
            status=JobStatus.FAILED,
            error_type=error.type,
            error_detail=error.detail,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
    )
    enqueue_callbacks(session, OwnerKind.TRAINING_JOB, [job_id])
    session.commit()
