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
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared import job_state, leases
from shared.callbacks import OwnerKind, enqueue_callbacks
from shared.db.base import utcnow
from shared.db.models import JobStatus, TrainingEpoch, TrainingJob
from shared.errors import AppError


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
    job: TrainingJob | None = session.scalar(
        leases.claim_statement(TrainingJob, job_id, worker, lease_s)
    )
    if job is not None:
        session.commit()
        return job
    session.rollback()
    seconds = leases.busy_seconds(session, TrainingJob, job_id)
    return None if seconds is None else Busy(seconds)


def report_progress(
    session: Session,
    job_id: uuid.UUID,
    worker: str,
    progress: dict[str, Any] | None,
    lease_s: float,
) -> bool:
    """Store progress (None: keep it) and renew the lease; False when no longer ours."""
    values = {"progress": progress} if progress is not None else {}
    return leases.renew(session, TrainingJob, job_id, lease_s, worker=worker, **values)


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
        leases.renew_statement(
            TrainingJob,
            job_id,
            lease_s,
            worker=worker,
            progress=progress,
            checkpoint_key=checkpoint_key,
        )
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
        .where(
            TrainingJob.id == job_id,
            TrainingJob.status == JobStatus.RUNNING,
            TrainingJob.worker == worker,  # a worker whose job was taken over stops writing
        )
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
    job_state.fail_one(session, TrainingJob, job_id, error, worker=worker)
    session.commit()
