"""Claiming and renewing a lease on a job, a training job or a dataset import.

A claim is a conditional UPDATE: it takes a row that waits (a queued job; an import that
nobody holds) or one whose holder is gone (its lease expired, or the same worker node
redelivered the task after a child process died), counts an attempt and sets
`lease_expires_at`. The holder renews the lease while it works; the reconciler re-sends
rows whose lease ran out. Every time is the database clock (`now()`), never the app
clock, so workers on hosts with skewed clocks agree on who holds what.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import ColumnElement, Update, and_, func, or_, select, true, update
from sqlalchemy.orm import Session, sessionmaker

from shared.db.models import DatasetStatus, DatasetVersion, Job, JobStatus, TrainingJob

log = logging.getLogger(__name__)

Leased = type[Job] | type[TrainingJob] | type[DatasetVersion]


def lease_end(lease_s: float) -> Any:
    """`now() + lease_s` on the database clock."""
    return func.now() + timedelta(seconds=lease_s)


def waiting(table: Leased) -> ColumnElement[bool]:
    """Not yet claimed: a queued job (an import stays `importing` from upload to end)."""
    if table is DatasetVersion:
        return and_(table.status == DatasetStatus.IMPORTING, table.lease_expires_at.is_(None))
    return table.status == JobStatus.QUEUED


def held(table: Leased) -> ColumnElement[bool]:
    """Claimed and not finished: a running job, an import with a lease."""
    if table is DatasetVersion:
        return and_(table.status == DatasetStatus.IMPORTING, table.lease_expires_at.is_not(None))
    return table.status == JobStatus.RUNNING


def expired(table: Leased) -> ColumnElement[bool]:
    """Held under a lease that ran out: its holder died (or hangs)."""
    return and_(held(table), table.lease_expires_at < func.now())


def claim_values(table: Leased, worker: str, lease_s: float) -> dict[str, Any]:
    """What a claim sets (also used by micro-batching, which claims several jobs at once)."""
    values: dict[str, Any] = {
        "attempts": table.attempts + 1,
        "worker": worker,
        "lease_expires_at": lease_end(lease_s),
    }
    if issubclass(table, (Job, TrainingJob)):
        values["status"] = JobStatus.RUNNING
        values["started_at"] = func.coalesce(table.started_at, func.now())
    return values


def claim_statement(table: Leased, row_id: uuid.UUID, worker: str, lease_s: float) -> Update:
    """UPDATE ... RETURNING the row, when it waits or its holder is gone (see module doc)."""
    takeover = or_(
        table.lease_expires_at.is_(None),
        table.lease_expires_at < func.now(),
        table.worker == worker,
    )
    started = table.status == (
        DatasetStatus.IMPORTING if table is DatasetVersion else JobStatus.RUNNING
    )
    return (
        update(table)
        .where(table.id == row_id, or_(waiting(table), and_(started, takeover)))
        .values(**claim_values(table, worker, lease_s))
        .returning(table)
    )


def renew_statement(
    table: Leased, row_id: uuid.UUID, lease_s: float, *, worker: str | None = None, **values: Any
) -> Update:
    """Extend the lease (and set ``values``) while the row is held (by ``worker``, if given).

    RETURNING the id: no row means the work ended meanwhile (cancelled, failed, taken over).
    """
    ours = table.worker == worker if worker is not None else true()
    return (
        update(table)
        .where(table.id == row_id, held(table), ours)
        .values(lease_expires_at=lease_end(lease_s), **values)
        .returning(table.id)
    )


def renew(
    session: Session,
    table: Leased,
    row_id: uuid.UUID,
    lease_s: float,
    *,
    worker: str | None = None,
    **values: Any,
) -> bool:
    """Renew on a sync session and commit; False when the row is no longer held."""
    row = session.execute(renew_statement(table, row_id, lease_s, worker=worker, **values)).first()
    session.commit()
    return row is not None


def busy_seconds(session: Session, table: Leased, row_id: uuid.UUID) -> float | None:
    """After a refused claim: seconds until the other holder's lease runs out (at least 1),
    or None when the row is finished (nothing to do)."""
    row = session.execute(
        select(
            held(table) | waiting(table),
            func.extract("epoch", table.lease_expires_at - func.now()),
        ).where(table.id == row_id)
    ).first()
    if row is None or not row[0]:
        return None
    return max(1.0, float(row[1])) if row[1] is not None else 1.0


@contextmanager
def kept_alive(
    sessions: sessionmaker[Session], table: Leased, row_id: uuid.UUID, lease_s: float, worker: str
) -> Iterator[None]:
    """Renew the lease every quarter lease from a thread while the block runs.

    For work with long stretches between writes (an import's split and bulk insert); the
    thread dies with the process, so a killed worker's lease still runs out.
    """
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(lease_s / 4):
            try:
                with sessions() as session:
                    if not renew(session, table, row_id, lease_s, worker=worker):
                        return  # ended or taken over: nothing left to keep
            except Exception:  # database hiccup: the next beat tries again
                log.warning("could not renew the lease of %s", row_id, exc_info=True)

    thread = threading.Thread(target=beat, daemon=True, name="lease")
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
