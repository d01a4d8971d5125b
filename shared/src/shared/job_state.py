"""Failing a job, a training job or a dataset version: one statement for every service.

The API (broker down at submit, reconciler), the workers (task errors, time limits,
attempts exceeded) and the trainer all fail work the same way: one conditional UPDATE
that only moves a still-active row (queued/running, or importing) to `failed`, sets
`error_type`/`error_detail` from an `AppError` (the problem-type vocabulary of
`shared.errors`), stamps `finished_at` and drops the lease; for jobs and training jobs
the callback outbox row is added in the same transaction. The caller commits.

`fail` runs it on a sync session (workers, trainer), `fail_async` on an AsyncSession
(API); both use `fail_statement`, so the two cannot drift apart.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import ColumnElement, Update, func, true, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from shared.callbacks import OwnerKind, enqueue_statement
from shared.db.models import DatasetStatus, DatasetVersion, Job, JobStatus, TrainingJob
from shared.errors import AppError

Failable = type[Job] | type[TrainingJob] | type[DatasetVersion]

_ACTIVE: dict[Failable, tuple[str, ...]] = {
    Job: (JobStatus.QUEUED, JobStatus.RUNNING),
    TrainingJob: (JobStatus.QUEUED, JobStatus.RUNNING),
    DatasetVersion: (DatasetStatus.IMPORTING,),
}
_FAILED: dict[Failable, str] = {
    Job: JobStatus.FAILED,
    TrainingJob: JobStatus.FAILED,
    DatasetVersion: DatasetStatus.FAILED,
}
_CALLBACKS: dict[Failable, OwnerKind] = {Job: OwnerKind.JOB, TrainingJob: OwnerKind.TRAINING_JOB}


def active(table: Failable) -> ColumnElement[bool]:
    """The row is still in a state that can end (queued/running, or importing)."""
    return table.status.in_(_ACTIVE[table])


def fail_statement(
    table: Failable,
    error: AppError,
    *where: ColumnElement[bool],
    worker: str | None = None,
    **values: Any,
) -> Update:
    """UPDATE active rows matching ``where`` to failed, RETURNING their ids.

    Args:
        worker: only while this worker still holds the row (a worker whose job was taken
            over must not fail it under its new holder).
        values: further columns to set (e.g. a dataset version's `errors`).
    """
    ours = table.worker == worker if worker is not None else true()
    return (
        update(table)
        .where(active(table), ours, *where)
        .values(
            status=_FAILED[table],
            error_type=error.type,
            error_detail=error.detail,
            finished_at=func.now(),
            lease_expires_at=None,
            **values,
        )
        .returning(table.id)
    )


def fail(
    session: Session,
    table: Failable,
    error: AppError,
    *where: ColumnElement[bool],
    worker: str | None = None,
    **values: Any,
) -> list[uuid.UUID]:
    """Fail on a sync session (the caller commits); returns the ids that were failed."""
    ids = list(session.scalars(fail_statement(table, error, *where, worker=worker, **values)))
    if ids and table in _CALLBACKS:
        session.execute(enqueue_statement(_CALLBACKS[table], ids))
    return ids


async def fail_async(
    session: AsyncSession,
    table: Failable,
    error: AppError,
    *where: ColumnElement[bool],
    worker: str | None = None,
    **values: Any,
) -> list[uuid.UUID]:
    """Fail on an AsyncSession (the caller commits); returns the ids that were failed."""
    statement = fail_statement(table, error, *where, worker=worker, **values)
    ids = list((await session.scalars(statement)).all())
    if ids and table in _CALLBACKS:
        await session.execute(enqueue_statement(_CALLBACKS[table], ids))
    return ids


def fail_one(
    session: Session, table: Failable, row_id: uuid.UUID, error: AppError, **kw: Any
) -> bool:
    """Fail one row by id on a sync session; False when it was no longer active."""
    return bool(fail(session, table, error, table.id == row_id, **kw))
