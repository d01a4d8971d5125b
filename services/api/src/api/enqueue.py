"""Hand committed jobs to the broker (never before the commit: Postgres is the truth)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from starlette.concurrency import run_in_threadpool

from shared.db.models import Priority
from shared.errors import ServiceUnavailable
from shared.job_intake import RETRY_POLICY
from shared.queueing import PRIORITY_VALUE
from shared.tasks import Queue, TaskName

log = logging.getLogger(__name__)


async def _send(
    celery: Celery,
    task: TaskName,
    kwargs: dict[str, str],
    *,
    queue: str,
    what: str,
    retry_hint: str = "Retry shortly.",
    problem_extensions: dict[str, Any] | None = None,
    **options: Any,
) -> None:
    """send_task off the event loop (it blocks on the socket); broker down -> 503 problem."""
    try:
        await run_in_threadpool(
            celery.send_task,
            task,
            kwargs=kwargs,
            queue=queue,
            retry=True,
            retry_policy=RETRY_POLICY,
            **options,
        )
    except (BrokerError, OSError) as exc:
        log.warning("broker unavailable while enqueueing %s %s: %s", what, kwargs, exc)
        raise ServiceUnavailable(
            f"The job queue is not reachable; the {what} was not started. {retry_hint}",
            **(problem_extensions or {}),
        ) from exc


async def submit_inference(
    celery: Celery, *, job_id: uuid.UUID, queue: str, priority: Priority
) -> None:
    """Send the job's task; raise ServiceUnavailable if the broker cannot take it."""
    await _send(
        celery,
        TaskName.INFER,
        {"job_id": str(job_id)},
        queue=queue,
        what="job",
        problem_extensions={"job_id": str(job_id)},
        priority=PRIORITY_VALUE[priority],
    )


async def submit_dataset_import(celery: Celery, *, version_id: uuid.UUID) -> None:
    """Send a dataset version's import task to the `datasets` queue (its own worker)."""
    await _send(
        celery,
        TaskName.IMPORT_DATASET,
        {"version_id": str(version_id)},
        queue=Queue.DATASETS,
        what="import",
        retry_hint="Upload again shortly.",
    )


async def submit_training(
    celery: Celery, *, training_job_id: uuid.UUID, queue: str = Queue.TRAIN.value
) -> None:
    """Send a training job to its queue; ServiceUnavailable if the broker is down."""
    await _send(
        celery,
        TaskName.FINE_TUNE,
        {"training_job_id": str(training_job_id)},
        queue=queue,
        what="training job",
        problem_extensions={"training_job_id": str(training_job_id)},
    )


async def submit_guard(celery: Celery, *, version_id: uuid.UUID) -> None:
    """Send a version's runtime-plan accuracy guard to the cpu queue (issue 14)."""
    await _send(
        celery, TaskName.GUARD_PLANS, {"version_id": str(version_id)}, queue=Queue.CPU,
        what="accuracy guard",
    )  # fmt: skip


async def submit_guard_quietly(celery: Celery, *, version_id: uuid.UUID) -> None:
    """After a registration or promotion: a broker hiccup must not fail that request; the
    version stays on fp32 until `POST .../guard` runs the guard."""
    try:
        await submit_guard(celery, version_id=version_id)
    except ServiceUnavailable:
        log.warning("accuracy guard of %s not enqueued; it runs fp32 until guarded", version_id)
