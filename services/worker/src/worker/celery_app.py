"""Inference worker: `celery -A worker.celery_app worker -Q cpu` (or `-Q gpu`)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.exc import OperationalError

from shared.config import get_settings
from shared.errors import AppError
from shared.queueing import make_celery
from shared.tasks import TaskName
from worker import jobs
from worker.context import configure_torch, get_context
from worker.tasks.infer import run_inference_job

log = logging.getLogger(__name__)
app = make_celery("worker", get_settings().require_redis_url())


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_torch(get_settings())
    get_context()


@app.task(
    name=TaskName.INFER,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def infer(job_id: str) -> None:
    ctx = get_context()
    try:
        run_inference_job(ctx, uuid.UUID(job_id))
    except OperationalError:
        raise  # database hiccup: retried with backoff; the job row is still queued/running
    except Exception:
        # Anything else is a bug or an unreadable model: fail the job visibly, never leave
        # it "running". The trace goes to the log, not to the client.
        log.exception("job %s failed unexpectedly", job_id)
        with ctx.sessions() as session:
            jobs.fail(
                session,
                uuid.UUID(job_id),
                AppError("the worker failed while processing this job; it has been logged"),
            )
