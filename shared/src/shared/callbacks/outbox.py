"""Outbox rows for finished jobs, inserted in the transaction that finishes the job.

`enqueue_statement` is one INSERT ... SELECT, so it works from the workers' sync sessions,
the API's async sessions and bulk updates alike, and it is idempotent: a job with no
callback URL, not final, or already enqueued gets no (second) row. Call it after any
transition to succeeded/failed/cancelled, before the commit.

The body is a summary, never results: ids, status, model, times and where to read the
results with an API key (the results are patient data).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from sqlalchemy import Insert, String, cast, exists, func, insert, literal, select
from sqlalchemy.orm import Session

from shared.db.models import (
    CallbackDelivery,
    DeliveryStatus,
    Job,
    JobStatus,
    Model,
    ModelVersion,
    TrainingJob,
)

FINAL = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class OwnerKind(StrEnum):
    JOB = "job"
    TRAINING_JOB = "training_job"


RESULT_PATHS = {OwnerKind.JOB: "/v1/jobs/", OwnerKind.TRAINING_JOB: "/v1/training-jobs/"}


def _payload(kind: OwnerKind, table: type[Job] | type[TrainingJob], ref: Any) -> Any:
    return func.jsonb_build_object(
        "event",
        f"{kind.value}.finished",
        "kind",
        kind.value,
        "id",
        cast(table.id, String),
        "status",
        table.status,
        "model",
        ref,
        "created_at",
        table.created_at,
        "finished_at",
        table.finished_at,
        "error_type",
        table.error_type,
        "result_path",
        RESULT_PATHS[kind] + cast(table.id, String),
    )


def enqueue_statement(kind: OwnerKind, ids: Sequence[uuid.UUID]) -> Insert:
    """INSERT a pending delivery for each final job of `ids` that has a callback URL."""
    table: type[Job] | type[TrainingJob] = Job if kind is OwnerKind.JOB else TrainingJob
    version_id = (
        Job.model_version_id if kind is OwnerKind.JOB else TrainingJob.result_model_version_id
    )
    ref = Model.name + ":" + cast(ModelVersion.version, String)
    already = exists().where(
        CallbackDelivery.owner_id == table.id, CallbackDelivery.owner_kind == kind.value
    )
    rows = (
        select(
            func.gen_random_uuid(),
            func.now(),
            table.tenant_id,
            literal(kind.value),
            table.id,
            table.callback_url,
            _payload(kind, table, ref),
            literal(DeliveryStatus.PENDING.value),
            literal(0),
            func.now(),
        )
        .select_from(table)
        .outerjoin(ModelVersion, ModelVersion.id == version_id)
        .outerjoin(Model, Model.id == ModelVersion.model_id)
        .where(
            table.id.in_(list(ids)),
            table.callback_url.is_not(None),
            table.status.in_([s.value for s in FINAL]),
            ~already,
        )
    )
    columns = [
        CallbackDelivery.id,
        CallbackDelivery.created_at,
        CallbackDelivery.tenant_id,
        CallbackDelivery.owner_kind,
        CallbackDelivery.owner_id,
        CallbackDelivery.url,
        CallbackDelivery.payload,
        CallbackDelivery.status,
        CallbackDelivery.attempts,
        CallbackDelivery.next_attempt_at,
    ]
    return insert(CallbackDelivery).from_select([c.key for c in columns], rows)


def enqueue_callbacks(session: Session, kind: OwnerKind, ids: Sequence[uuid.UUID]) -> None:
    """Add the outbox rows to a sync session's transaction (workers); the caller commits.

    From an AsyncSession: ``await session.execute(enqueue_statement(kind, ids))``.
    """
    if ids:
        session.execute(enqueue_statement(kind, ids))
