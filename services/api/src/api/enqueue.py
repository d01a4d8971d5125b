"""Hand committed jobs to the broker (never before the commit: Postgres is the truth)."""

from __future__ import annotations

import logging
import uuid

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from starlette.concurrency import run_in_threadpool

from shared.db.models import Priority
from shared.errors import ServiceUnavailable
from shared.queueing import PRIORITY_VALUE
from shared.tasks import Queue, TaskName

log = logging.getLogger(__name__)


async def submit_inference(
    celery: Celery, *, job_id: uuid.UUID, queue: str, priority: Priority
) -> None:
    """Send the job's task; raise ServiceUnavailable if the broker cannot take it."""
    try:
        # send_task blocks on the socket: keep it off the event loop.
        await run_in_threadpool(
            celery.send_task,
            TaskName.INFER,
            kwargs={"job_id": str(job_id)},
            queue=queue,
            priority=PRIORITY_VALUE[priority],
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except (BrokerError, OSError) as exc:
        log.warning("broker unavailable while enqueueing job %s: %s", job_id, exc)
        raise ServiceUnavailable(
            "The job queue is not reachable; the job was not started. Retry shortly.",
            job_id=str(job_id),
        ) from exc


async def submit_dataset_import(celery: Celery, *, version_id: uuid.UUID) -> None:
    """Send a dataset version's import task to the cpu queue (torch-free work)."""
    try:
        await run_in_threadpool(
            celery.send_task,
            TaskName.IMPORT_DATASET,
            kwargs={"version_id": str(version_id)},
            queue=Queue.CPU,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except (BrokerError, OSError) as exc:
        log.warning("broker unavailable while enqueueing import %s: %s", version_id, exc)
        raise ServiceUnavailable(
            "The job queue is not reachable; the import was not started. Upload again shortly."
        ) from exc


async def submit_training(celery: Celery, *, training_job_id: uuid.UUID) -> None:
    """Send a training job to the `train` queue; ServiceUnavailable if the broker is down."""
    try:
        await run_in_threadpool(
            celery.send_task,
            TaskName.FINE_TUNE,
            kwargs={"training_job_id": str(training_job_id)},
            queue=Queue.TRAIN.value,
            retry=True,
            retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        )
    except (BrokerError, OSError) as exc:
        log.warning("broker unavailable while enqueueing training job %s: %s", training_job_id, exc)
        raise ServiceUnavailable(
            "The job queue is not reachable; the training job was not started. Retry shortly.",
            training_job_id=str(training_job_id),
        ) from exc
