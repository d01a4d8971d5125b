"""Re-send jobs and imports the broker lost and fail those whose workers keep dying.

Postgres is the truth about jobs, Redis only carries messages. Messages get lost: Redis
restarts without persistence, a worker node dies holding an unacknowledged message
(redelivered only after the 1 h visibility timeout), or the API dies between its commit
and `send_task`. Every `reconcile_interval_seconds` one pass:

- fails running jobs whose lease expired after `max_attempts` claims (`attempts-exceeded`);
- re-sends queued jobs older than `reconcile_grace_seconds`, and running jobs whose lease
  expired, when no message for them is waiting in their queue or was delivered recently.

"Jobs" are inference jobs, training jobs and dataset imports (a version `importing`
without a lease waits, one with an expired lease lost its worker): all three are leased
(shared.leases) and failed (shared.job_state) alike, and re-sent through api.enqueue.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import Celery
from fastapi import FastAPI
from prometheus_client import Counter
from redis.asyncio import Redis
from sqlalchemy import case, func, literal, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.enqueue import submit_dataset_import, submit_inference, submit_training
from shared import job_state, leases
from shared.config import Settings
from shared.db.models import DatasetVersion, Job, Priority, TrainingJob
from shared.errors import AttemptsExceeded
from shared.leases import Leased
from shared.queueing import UNACKED_KEY, queue_keys
from shared.tasks import Queue

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


async def _send_job(celery: Celery, job_id: uuid.UUID, queue: str, priority: str) -> None:
    await submit_inference(celery, job_id=job_id, queue=queue, priority=Priority(priority))


async def _send_training(celery: Celery, job_id: uuid.UUID, queue: str, _: str) -> None:
    await submit_training(celery, training_job_id=job_id, queue=queue)


async def _send_import(celery: Celery, version_id: uuid.UUID, _queue: str, _: str) -> None:
    await submit_dataset_import(celery, version_id=version_id)


@dataclass(frozen=True)
class JobKind:
    name: str
    table: Leased
    # Re-sends one row through api.enqueue, as the API first sent it (same task, arguments
    # and retry policy): (celery, id, queue, priority).
    send: Callable[[Celery, uuid.UUID, str, str], Awaitable[None]]


KINDS = (
    JobKind("inference", Job, _send_job),
    JobKind("training", TrainingJob, _send_training),
    JobKind("import", DatasetVersion, _send_import),
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
    failed = await job_state.fail_async(
        session, table, AttemptsExceeded(limit), leases.expired(table), table.attempts >= limit
    )
    if failed:
        FAILED.labels(kind.name).inc(len(failed))
        log.warning("failed %d %s job(s) after %d attempts: %s", len(failed), kind.name, limit,
                    [str(i) for i in failed])  # fmt: skip
        result.failed += failed


def _queue_and_priority(table: Leased) -> tuple[Any, Any]:
    if issubclass(table, Job):
        return table.queue, table.priority
    if issubclass(table, TrainingJob):
        return table.queue, literal(Priority.ROUTINE.value)
    return literal(Queue.DATASETS.value), literal(Priority.ROUTINE.value)


async def _orphans(
    session: AsyncSession, redis: Redis, kind: JobKind, grace_s: float
) -> list[tuple[uuid.UUID, str, str, str]]:
    """(id, queue, priority, reason) of waiting/expired rows no broker message covers."""
    table = kind.table
    cutoff = func.now() - timedelta(seconds=grace_s)
    queue, priority = _queue_and_priority(table)
    rows = (
        await session.execute(
            select(
                table.id,
                queue,
                priority,
                case((leases.waiting(table), literal("lost")), else_=literal("expired-lease")),
            )
            .where(or_(leases.waiting(table) & (table.created_at < cutoff), leases.expired(table)))
            .order_by(table.created_at)
            .limit(1000)
        )
    ).all()
    if not rows:
        return []
    present = await ids_in_broker(redis, {r[1] for r in rows}, grace_s)
    return [(r[0], r[1], r[2], r[3]) for r in rows if r[0] not in present]


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
                await kind.send(celery, job_id, queue, priority)
                REQUEUED.labels(kind.name, reason).inc()
                log.warning("re-sent %s job %s (%s)", kind.name, job_id, reason)
                result.requeued.append(job_id)
        await session.commit()
    return result


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
