"""Checkpoints of ended training jobs are removed by housekeeping (issue 11 item 7).

The test stack runs the API's housekeeping every second: a failed and a cancelled job
lose their checkpoint blob and key, a running job keeps its own (it may still resume).
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.models import JobStatus, TrainingJob
from shared.storage import BlobStore
from tests.factories import bare_training_job

OLD = time.time() - 3 * 86400  # past any blob grace period


def _checkpoint(stack: Stack) -> tuple[str, Path]:
    store = BlobStore(Path(stack.env["MEDIMG_DATA_DIR"]) / "store")
    key, _ = store.put(os.urandom(4096), prefix="checkpoints", suffix=".pt")
    path = store.path(key)
    os.utime(path, (OLD, OLD))
    return key, path


def _key(db: sessionmaker[Session], job_id: uuid.UUID) -> str | None:
    with db() as s:
        job = s.get(TrainingJob, job_id)
        assert job is not None
        return job.checkpoint_key


def test_final_training_jobs_lose_their_checkpoints(
    db: sessionmaker[Session], stack: Stack
) -> None:
    ended = {}
    for status in (JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.SUCCEEDED):
        key, path = _checkpoint(stack)
        ended[bare_training_job(db, status=status, checkpoint_key=key)] = path
    live_key, live_path = _checkpoint(stack)
    live = bare_training_job(db, status=JobStatus.RUNNING, checkpoint_key=live_key)
    deadline = time.monotonic() + 30
    while any(p.exists() for p in ended.values()):
        assert time.monotonic() < deadline, "housekeeping left checkpoints of ended jobs"
        time.sleep(0.5)
    assert all(_key(db, job_id) is None for job_id in ended)
    assert _key(db, live) == live_key and live_path.exists()
    with db() as s:  # leave nothing running behind for other tests
        job = s.get(TrainingJob, live)
        assert job is not None
        job.status = JobStatus.CANCELLED
        s.commit()
