"""Async job queries. Helpers never commit: the handler owns the transaction."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from shared.db.base import utcnow
from shared.db.models import (
    CallbackDelivery,
    ImageStatus,
    Job,
    JobImage,
    JobStatus,
    ModelVersion,
    Priority,
)
from shared.errors import Conflict, InvalidRequest, JobNotFound
from shared.job_intake import StoredImage, new_job


@dataclass(frozen=True)
class ImageCounts:
    succeeded: int = 0
    failed: int = 0


def create_job(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    version: ModelVersion,
    params: dict[str, Any],
    priority: Priority,
    queue: str,
    images: list[StoredImage],
) -> Job:
    job = new_job(
        tenant_id=tenant_id,
        version=version,
        params=params,
        priority=priority,
        queue=queue,
        images=images,
    )
    session.add(job)
    return job


def _job_query() -> Any:
    return select(Job).options(selectinload(Job.model_version).selectinload(ModelVersion.model))


async def get_job(
    *, session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID, with_images: bool = True
) -> Job:
    """A job of this tenant; another tenant's job is reported as not found."""
    query = _job_query().where(Job.id == job_id, Job.tenant_id == tenant_id)
    if with_images:
        query = query.options(selectinload(Job.images))
    job: Job | None = await session.scalar(query)
    if job is None:
        raise JobNotFound(f"no job with id {job_id}", job_id=str(job_id))
    return job


async def image_counts(
    *, session: AsyncSession, job_ids: list[uuid.UUID]
) -> dict[uuid.UUID, ImageCounts]:
    if not job_ids:
        return {}
    rows = await session.execute(
        select(
            JobImage.job_id,
            func.count(case((JobImage.status == ImageStatus.SUCCEEDED, 1))),
            func.count(case((JobImage.status == ImageStatus.FAILED, 1))),
        )
        .where(JobImage.job_id.in_(job_ids))
        .group_by(JobImage.job_id)
    )
    return {job_id: ImageCounts(ok, bad) for job_id, ok, bad in rows.all()}


class _Keyset(Protocol):
    created_at: datetime
    id: uuid.UUID


def encode_cursor(row: _Keyset) -> str:
    """A (created_at, id) keyset cursor; also used by the audit log."""
    raw = f"{row.created_at.isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|")
        return datetime.fromisoformat(created), uuid.UUID(job_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(f"cursor {cursor!r} is not a cursor this API returned") from None


async def list_jobs(
    *,
    session: AsyncSession,
    tenant_id: uuid.UUID,
    statuses: list[JobStatus] | None,
    model: str | None,
    created_after: datetime | None,
    created_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable under inserts."""
    query = (
        _job_query()
        .where(Job.tenant_id == tenant_id)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .limit(limit + 1)
    )
    if statuses:
        query = query.where(Job.status.in_([s.value for s in statuses]))
    if model:
        query = query.where(Job.model_name == model)
    if created_after:
        query = query.where(Job.created_at >= created_after)
    if created_before:
        query = query.where(Job.created_at < created_before)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < at, and_(Job.created_at == at, Job.id < last_id)))
    jobs = list((await session.scalars(query)).all())
    next_cursor = encode_cursor(jobs[limit - 1]) if len(jobs) > limit else None
    return jobs[:limit], next_cursor


async def cancel_job(*, session: AsyncSession, tenant_id: uuid.UUID, job_id: uuid.UUID) -> None:
    """Cancel a queued or running job; the worker checks the row and stops writing."""
    result = await session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.tenant_id == tenant_id,
            Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
        )
        .values(status=JobStatus.CANCELLED, finished_at=utcnow())
        .returning(Job.id)
    )
    if result.first() is None:
        job = await get_job(session=session, tenant_id=tenant_id, job_id=job_id, with_images=False)
        raise Conflict(
            f"job {job_id} is already {job.status} and can no longer be cancelled",
            job_id=str(job_id),
            job_status=job.status,
        )


async def callback_delivery(*, session: AsyncSession, job_id: uuid.UUID) -> CallbackDelivery | None:
    """The job's completion callback (outbox row), if it has been enqueued."""
    delivery: CallbackDelivery | None = await session.scalar(
        select(CallbackDelivery)
        .where(CallbackDelivery.owner_id == job_id, CallbackDelivery.owner_kind == "job")
        .order_by(CallbackDelivery.created_at.desc())
        .limit(1)
    )
    return delivery
