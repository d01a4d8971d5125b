"""Re-send jobs the broker lost and fail jobs whose workers keep dying.

Postgres is the truth about jobs, Redis only carries messages. Messages get lost: Redis
restarts without persistence, a worker node dies holding an unacknowledged message
(redelivered only after the 1 h visibility timeout), or the API dies between its commit
and `send_task`. Every `reconcile_interval_seconds` one pass:

- fails running jobs whose lease expired after `max_attempts` claims (`attempts-exceeded`);
- re-sends queued jobs older than `reconcile_grace_seconds`, and running jobs whose lease
  expired, when no message for them is waiting in their queue or was delivered recently.

A duplicate message is harmless (claims are leases, results are written once), so the
pass errs towards sending. It runs inside every API process, because every deployment
runs the API and it already holds a database pool and a broker client; a transaction-level
advisory lock makes concurrent passes of several API replicas skip rather than overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from fastapi import FastAPI
from prometheus_client import Counter
from redis.asyncio import Redis
from sqlalchemy import func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.concurrency import run_in_threadpool

from shared.callbacks import OwnerKind, enqueue_statement
from shared.config import Settings
from shared.db.base import utcnow
from shared.db.models import Job, JobStatus, Priority, TrainingJob
from shared.errors import AttemptsExceeded
from shared.queueing import PRIORITY_VALUE, UNACKED_KEY, queue_keys
from shared.tasks import TaskName

log = logging.getLogger(__name__)

# Arbitrary constant ("medimg" in ASCII): the advisory lock of the reconciler pass.
LOCK_KEY = 0x6D6564696D67
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

REQUEUED = Counter(
    "medimg_reconciler_requeued_total",
    "Jobs re-sent to the broker by the reconciler",
    ["kind", "reason"],
)
FAILED = Counter(
    "medimg_reconciler_failed_total",
    "Jobs failed by the reconciler after exceeding their attempts",
    ["kind"],
)


@dataclass(frozen=True)
class JobKind:
    name: str
    table: type[Job] | type[TrainingJob]
    task: TaskName
    callback_kind: OwnerKind
    id_argument: str  # the task's keyword argument naming the job, as api.enqueue sends it


KINDS = (
    JobKind("inference", Job, TaskName.INFER, OwnerKind.JOB, "job_id"),
    JobKind("training", TrainingJob, TaskName.FINE_TUNE, OwnerKind.TRAINING_JOB, "training_job_id"),
)


@dataclass
class PassResult:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    skipped: bool = False  # another replica held the lock


async def ids_in_broker(redis: Redis, queues: set[str], recent_s: float) -> set[uuid.UUID]:
    """Job ids named by messages waiting in `queues` or delivered less than `recent_s` ago.

    Messages are matched by any job id they mention (task id, args or kwargs), so a
    message sent with another task id still counts.
    """
    async with redis.pipeline(transaction=False) as pipe:
        for queue in sorted(queues):
            for key in queue_keys(queue):
                pipe.lrange(key, 0, -1)
        pipe.hgetall(UNACKED_KEY)
        pipe.zrangebyscore(f"{UNACKED_KEY}_index", time.time() - recent_s, "+inf")
        *waiting, unacked, recent_tags = await pipe.execute()
    raw = [m for messages in waiting for m in messages]
    raw += [unacked[tag] for tag in recent_tags if tag in unacked]
    return {uuid.UUID(m.decode()) for message in raw for m in _UUID.findall(message)}


async def _fail_exhausted(
    session: AsyncSession, kind: JobKind, limit: int, result: PassResult
) -> None:
    table = kind.table
    error = AttemptsExceeded(limit)
    rows = await session.execute(
        update(table)
        .where(
            table.status == JobStatus.RUNNING,
            table.lease_expires_at < func.now(),
            table.attempts >= limit,
        )
        .values(
            status=JobStatus.FAILED,
            error_type=error.type,
            error_detail=error.detail,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        .returning(table.id)
    )
    failed = list(rows.scalars())
    if failed:
        await session.execute(enqueue_statement(kind.callback_kind, failed))
        FAILED.labels(kind.name).inc(len(failed))
        log.warning("failed %d %s job(s) after %d attempts: %s", len(failed), kind.name, limit,
                    [str(i) for i in failed])  # fmt: skip
        result.failed += failed


async def _orphans(
    session: AsyncSession, redis: Redis, kind: JobKind, grace_s: float
) -> list[tuple[uuid.UUID, str, str, str]]:
    """(id, queue, priority, reason) of queued/expired jobs no broker message covers."""
    table = kind.table
    cutoff = func.now() - timedelta(seconds=grace_s)
    queued = (table.status == JobStatus.QUEUED) & (table.created_at < cutoff)
    expired = (table.status == JobStatus.RUNNING) & (table.lease_expires_at < func.now())
    priority = Job.priority if table is Job else literal(Priority.ROUTINE.value)
    rows = (
        await session.execute(
            select(table.id, table.queue, table.status, priority)
            .where(or_(queued, expired))
            .order_by(table.created_at)
            .limit(1000)
        )
    ).all()
    if not rows:
        return []
    present = await ids_in_broker(redis, {r.queue for r in rows}, grace_s)
    return [
        (r.id, r.queue, r[3], "lost" if r.status == JobStatus.QUEUED else "expired-lease")
        for r in rows
        if r.id not in present
    ]


async def reconcile_once(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    celery: Celery,
    settings: Settings,
) -> PassResult:
    """One pass over both job tables; see the module docstring."""
    result = PassResult()
    async with sessionmaker() as session:
        if not await session.scalar(select(func.pg_try_advisory_xact_lock(LOCK_KEY))):
            result.skipped = True
            return result
        for kind in KINDS:
            await _fail_exhausted(session, kind, settings.max_attempts, result)
            for job_id, queue, priority, reason in await _orphans(
                session, redis, kind, settings.reconcile_grace_seconds
            ):
                await run_in_threadpool(_send, celery, kind, job_id, queue, priority)
                REQUEUED.labels(kind.name, reason).inc()
                log.warning("re-sent %s job %s (%s)", kind.name, job_id, reason)
                result.requeued.append(job_id)
        await session.commit()
    return result


def _send(celery: Celery, kind: JobKind, job_id: uuid.UUID, queue: str, priority: str) -> None:
    # The job id as task id and sole argument, as the API sends it: a duplicate is a no-op.
    celery.send_task(
        kind.task,
        kwargs={kind.id_argument: str(job_id)},
        task_id=str(job_id),
        queue=queue,
        priority=PRIORITY_VALUE.get(Priority(priority), 0),
    )


def start(app: FastAPI) -> asyncio.Task[None]:
    """Run the loop in the background of an API process (from its lifespan)."""
    state = app.state
    return asyncio.create_task(
        run_forever(
            sessionmaker=state.sessionmaker,
            redis=state.redis,
            celery=state.celery,
            settings=state.settings,
        ),
        name="reconciler",
    )


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def run_forever(
    *,
    sessionmaker: async_sessionmaker[AsyncSession],
    redis: Redis,
    celery: Celery,
    settings: Settings,
) -> None:
    """Reconcile every interval until cancelled; an outage only skips passes."""
    while True:
        await asyncio.sleep(settings.reconcile_interval_seconds)
        try:
            result = await reconcile_once(
                sessionmaker=sessionmaker, redis=redis, celery=celery, settings=settings
            )
        except Exception as exc:  # database or broker down: the next pass tries again
            log.warning("reconciler pass failed: %s: %s", type(exc).__name__, exc)
            continue
        if result.requeued or result.failed:
            log.info(
                "reconciler pass",
                extra={"requeued": len(result.requeued), "failed": len(result.failed)},
            )
