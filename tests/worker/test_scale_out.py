"""Scale-out in miniature: two worker processes on one queue, as N machines would be."""

from __future__ import annotations

import signal
import time
from collections import Counter

import httpx
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from cli import services
from cli.stack import Stack
from shared.db.models import JobImage
from tests.conftest import wait_for_job
from tests.factories import image_files, labelled_pngs, submit_job


def test_two_workers_share_a_queue_and_no_job_runs_twice(
    api: httpx.Client, stack: Stack, db: sessionmaker[Session]
) -> None:
    second = services.worker("cpu", concurrency=1, node="cpu-b")
    proc = stack.spawn(second)
    try:
        deadline = time.monotonic() + 90
        while not stack._workers_answer(["cpu", "cpu-b"]):
            assert time.monotonic() < deadline, "second worker never came up"
            time.sleep(0.5)
        paths = [p for p, _ in labelled_pngs()] * 2
        ids = [submit_job(api, image_files(*paths)).json()["id"] for _ in range(16)]
        jobs = [wait_for_job(api, job_id) for job_id in ids]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        del stack.processes[second.name]

    ran_on = Counter(job["worker"].split("@")[0] for job in jobs)
    print(f"submitted {len(ids)} jobs; completed per worker: {dict(ran_on)}")
    assert all(job["status"] == "succeeded" for job in jobs)
    assert set(ran_on) == {"cpu", "cpu-b"}, ran_on  # both took work
    assert all(job["attempts"] == 1 for job in jobs)  # nothing ran twice
    with db() as s:
        per_image = s.execute(
            select(JobImage.job_id, JobImage.index, func.count())
            .where(JobImage.job_id.in_(ids))
            .group_by(JobImage.job_id, JobImage.index)
        ).all()
    assert len(per_image) == 16 * len(paths) and all(n == 1 for *_, n in per_image)
