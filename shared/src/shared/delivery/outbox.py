"""Outbox rows for DICOM result deliveries (rows of `callback_delivery`, own owner_kind).

The callback loop in the API skips these rows (it sends HTTP callbacks only); the gateway
claims them with FOR UPDATE SKIP LOCKED and a lease, so several gateway replicas share the
work and a replica dying mid-send leaves the row to be retried when the lease ends.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from shared.callbacks.outbox import FINAL
from shared.db.base import utcnow
from shared.db.dicom_models import DicomDestination
from shared.db.models import CallbackDelivery, DeliveryStatus, Job

DELIVERY_KIND = "dicom_result"
_ERROR_CHARS = 500


@dataclass(frozen=True)
class Claimed:
    id: uuid.UUID
    job_id: uuid.UUID
    tenant_id: uuid.UUID
    payload: dict[str, Any]
    attempts: int  # including this one


def enqueue_deliveries(
    session: Session, *, job: Job, destinations: Sequence[DicomDestination]
) -> None:
    """Add one pending delivery per destination to the session that creates the job."""
    for dest in destinations:
        session.add(
            CallbackDelivery(
                id=uuid.uuid4(),
                created_at=utcnow(),
                tenant_id=job.tenant_id,
                owner_kind=DELIVERY_KIND,
                owner_id=job.id,
                url=f"dicom:{dest.kind}:{dest.name}",
                payload={
                    "destination_id": str(dest.id),
                    "destination": dest.name,
                    "kind": dest.kind,
                },
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=utcnow(),
            )
        )


def claim_due(session: Session, *, limit: int, lease_seconds: float) -> list[Claimed]:
    """Claim due deliveries of final jobs, pushing their next attempt past the lease; commits."""
    due = (
        select(CallbackDelivery.id)
        .join(Job, Job.id == CallbackDelivery.owner_id)
        .where(
            CallbackDelivery.owner_kind == DELIVERY_KIND,
            CallbackDelivery.status == DeliveryStatus.PENDING,
            CallbackDelivery.next_attempt_at <= func.now(),
            Job.status.in_([s.value for s in FINAL]),
        )
        .order_by(CallbackDelivery.next_attempt_at)
        .limit(limit)
        .with_for_update(of=CallbackDelivery, skip_locked=True)
    )
    rows = session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.id.in_(due.scalar_subquery()))
        .values(
            next_attempt_at=func.now() + timedelta(seconds=lease_seconds),
            attempts=CallbackDelivery.attempts + 1,
        )
        .returning(
            CallbackDelivery.id,
            CallbackDelivery.owner_id,
            CallbackDelivery.tenant_id,
            CallbackDelivery.payload,
            CallbackDelivery.attempts,
        )
    )
    claimed = [Claimed(*row) for row in rows.all()]
    session.commit()
    return claimed


def backoff_seconds(attempts: int, base: float, cap: float) -> float:
    """Exponential backoff with jitter, so a PACS that was down is not stampeded."""
    delay: float = base * 2.0 ** (attempts - 1)
    return min(delay, cap) * random.uniform(0.5, 1.0)


def record_outcome(
    session: Session,
    item: Claimed,
    *,
    error: str | None,
    permanent: bool = False,
    max_attempts: int,
    backoff_base: float,
    backoff_cap: float,
    sop_instance_uids: Sequence[str] = (),
) -> str:
    """Store one attempt's outcome; returns ``delivered``, ``retry`` or ``failed``. Commits."""
    values: dict[str, Any]
    payload = dict(item.payload)
    if sop_instance_uids:
        payload["sop_instance_uids"] = list(sop_instance_uids)
    if error is None:
        outcome = "delivered"
        values = {"status": DeliveryStatus.DELIVERED, "delivered_at": utcnow(), "last_error": None}
    elif permanent or item.attempts >= max_attempts:
        outcome = "failed"
        values = {"status": DeliveryStatus.FAILED, "last_error": error[:_ERROR_CHARS]}
    else:
        outcome = "retry"
        wait = backoff_seconds(item.attempts, backoff_base, backoff_cap)
        values = {
            "next_attempt_at": utcnow() + timedelta(seconds=wait),
            "last_error": error[:_ERROR_CHARS],
        }
    session.execute(
        update(CallbackDelivery)
        .where(CallbackDelivery.id == item.id)
        .values(payload=payload, **values)
    )
    session.commit()
    return outcome


def deliveries_for_job(session: Session, job_id: uuid.UUID) -> list[CallbackDelivery]:
    """The job's result deliveries, one per destination (for the job view)."""
    return list(
        session.scalars(
            select(CallbackDelivery)
            .where(
                CallbackDelivery.owner_id == job_id, CallbackDelivery.owner_kind == DELIVERY_KIND
            )
            .order_by(CallbackDelivery.created_at)
        ).all()
    )
