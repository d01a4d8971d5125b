"""Delivery guarantees against the real database and broker of the session stack.

Leases and attempts (worker.jobs.claim), a task delivered twice at once, the reconciler
pass (api.reconciler), and cancellation that a late worker cannot undo.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from datetime import timedelta

import httpx
from redis.asyncio import Redis
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.base import utcnow
from shared.db.models import (
    ImageStatus,
    Job,
    JobImage,
    JobStatus,
    TrainingJob,
)
from shared.db.session import make_async_engine, make_async_sessionmaker
from shared.queueing import make_celery, queue_keys
from tests.chaos.harness import noise_png
from tests.conftest import wait_for_job
from tests.factories import (
    IDLE_QUEUE,
    bare_job,
    bare_training_job,
    image_files,
    labelled_pngs,
    stack_settings,
    submit_job,
)


def test_claim_is_a_lease_and_attempts_are_bounded(db: sessionmaker[Session]) -> None:
    from worker import jobs

    job_id = bare_job(db)
    with db() as s:
        first = jobs.claim(s, job_id, "cpu@a")
        assert first is not None and first.attempts == 1 and first.lease_expires_at is not None
        assert jobs.claim(s, job_id, "cpu@b") is None  # a live lease held by another node
        again = jobs.claim(s, job_id, "cpu@a")  # its own node: a child died, redelivered
        assert again is not None and again.attempts == 2
        s.execute(
            update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(1))
        )
        s.commit()
        taken = jobs.claim(s, job_id, "cpu@b")  # node a died: its lease ran out
        assert taken is not None and taken.attempts == 3 and taken.worker == "cpu@b"
        assert jobs.claim(s, job_id, "cpu@b") is None  # a 4th claim exceeds max_attempts=3
        job = s.get(Job, job_id)
        s.refresh(job)
    assert job is not None and job.status == JobStatus.FAILED
    assert job.error_type == "attempts-exceeded" and "3 times" in (job.error_detail or "")
    assert job.lease_expires_at is None


def test_two_deliveries_at_once_store_one_result_per_image(
    api: httpx.Client, db: sessionmaker[Session], stack: Stack
) -> None:
    from worker.context import make_context
    from worker.tasks.infer import run_inference_job

    paths = [p for p, _ in labelled_pngs()] * 2
    job = wait_for_job(api, submit_job(api, image_files(*paths)).json()["id"])
    job_id = uuid.UUID(job["id"])
    with db() as s:  # as if never run: the same message is now delivered twice
        s.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.QUEUED, attempts=0, lease_expires_at=None)
        )
        s.execute(
            update(JobImage)
            .where(JobImage.job_id == job_id)
            .values(status=ImageStatus.PENDING, output=None)
        )
        s.commit()

    ctx = make_context(stack_settings(stack))
    # Same node name: both deliveries pass the lease check and really run concurrently.
    runs = [
        threading.Thread(target=run_inference_job, args=(ctx, job_id, "cpu@twice"))
        for _ in range(2)
    ]
    for t in runs:
        t.start()
    for t in runs:
        t.join(timeout=120)

    final = api.get(f"/v1/jobs/{job_id}").json()
    with db() as s:
        per_image = s.execute(
            select(JobImage.index, func.count())
            .where(JobImage.job_id == job_id, JobImage.status == ImageStatus.SUCCEEDED)
            .group_by(JobImage.index)
        ).all()
    print(f"double delivery: images={len(paths)} results={len(per_image)} "
          f"attempts={final['attempts']}")  # fmt: skip
    assert final["status"] == "succeeded" and final["attempts"] == 2
    assert len(per_image) == len(paths) and all(n == 1 for _, n in per_image)
    assert [i["output"]["label"] for i in final["images"]] == [
        i["output"]["label"] for i in job["images"]
    ]


def test_reconciler_resends_lost_jobs_once_and_fails_exhausted_ones(
    db: sessionmaker[Session], stack: Stack
) -> None:
    from api.reconciler import ids_in_broker, reconcile_once

    old = utcnow() - timedelta(minutes=10)
    lost = bare_job(db, created_at=old)
    expired = bare_job(
        db,
        created_at=old,
        status=JobStatus.RUNNING,
        attempts=1,
        worker="cpu@gone",
        lease_expires_at=utcnow() - timedelta(seconds=5),
    )
    exhausted = bare_job(
        db,
        created_at=old,
        status=JobStatus.RUNNING,
        attempts=3,
        worker="cpu@gone",
        lease_expires_at=utcnow() - timedelta(seconds=5),
    )
    fresh = bare_job(db)  # its message may still be on its way: left alone
    training = bare_training_job(db, created_at=old)
    settings = stack_settings(stack, max_attempts=3, reconcile_grace_seconds=60)

    async def passes() -> tuple[list[uuid.UUID], list[uuid.UUID], set[uuid.UUID]]:
        engine = make_async_engine(settings.require_database_url(), pool_size=2)
        redis = Redis.from_url(settings.require_redis_url())
        celery = make_celery("test", settings.require_redis_url())
        kw = {"sessionmaker": make_async_sessionmaker(engine), "redis": redis, "celery": celery}
        try:
            first = await reconcile_once(settings=settings, **kw)  # type: ignore[arg-type]
            second = await reconcile_once(settings=settings, **kw)  # type: ignore[arg-type]
            present = await ids_in_broker(redis, {IDLE_QUEUE}, 60)
            waiting = b"".join(
                [b"".join(await redis.lrange(k, 0, -1)) for k in queue_keys(IDLE_QUEUE)]
            )
            assert f"'training_job_id': '{training}'".encode() in waiting  # the trainer's kwarg
            await redis.delete(*queue_keys(IDLE_QUEUE))
            return first.failed + second.failed, second.requeued, present
        finally:
            celery.close()
            await redis.aclose()
            await engine.dispose()

    failed, requeued_again, present = asyncio.run(passes())
    assert {lost, expired, training} <= present  # re-sent, by this pass (or the API's own)
    assert fresh not in present and exhausted not in present
    assert not {lost, expired} & set(requeued_again)  # a message is waiting: not sent twice
    assert exhausted in failed
    with db() as s:
        job = s.get(Job, exhausted)
        assert job is not None
        assert job.status == JobStatus.FAILED and job.error_type == "attempts-exceeded"
        s.execute(
            update(Job)
            .where(Job.id.in_([lost, expired, fresh]))
            .values(status=JobStatus.CANCELLED, lease_expires_at=None)
        )
        s.execute(
            update(TrainingJob).where(TrainingJob.id == training).values(status=JobStatus.CANCELLED)
        )
        s.commit()


def test_cancelled_running_job_never_turns_succeeded(
    api: httpx.Client, db: sessionmaker[Session]
) -> None:
    from worker import jobs

    files = [("files", (f"{i}.png", noise_png(i), "image/png")) for i in range(48)]
    job_id = submit_job(api, files).json()["id"]
    deadline = time.monotonic() + 60
    while api.get(f"/v1/jobs/{job_id}").json()["status"] == "queued":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel = api.post(f"/v1/jobs/{job_id}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    final = wait_for_job(api, job_id)
    with db() as s:  # a late or duplicate delivery cannot bring it back
        assert jobs.claim(s, uuid.UUID(job_id), "cpu@late") is None
        assert jobs.finish(s, uuid.UUID(job_id)) is None
    again = api.get(f"/v1/jobs/{job_id}").json()
    assert final["status"] == again["status"] == "cancelled"
    assert again["finished_at"] == final["finished_at"]
    assert any(i["status"] == "pending" for i in again["images"])  # it stopped early
