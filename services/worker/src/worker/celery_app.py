"""Inference worker: `celery -A worker.celery_app worker -Q cpu` (or `-Q gpu`)."""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import setup_logging, worker_init, worker_process_init, worker_process_shutdown
from sqlalchemy.exc import OperationalError

from shared.config import get_settings
from shared.errors import AppError, TimeLimitExceeded
from shared.logs import configure_logging
from shared.logs import job_id as job_id_var
from shared.queueing import make_celery
from shared.tasks import TaskName
from worker import (
    jobs,
    prometheus_endpoint,  # noqa: I001  (must precede prometheus_client imports)
)
from worker.context import configure_torch, get_context
from worker.tasks.datasets import import_dataset_version
from worker.tasks.guard import guard_version
from worker.tasks.infer import run_inference_job

log = logging.getLogger(__name__)
app = make_celery("worker", get_settings().require_redis_url())


@setup_logging.connect
def _logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(settings.log_level, json_logs=settings.json_logs)


@worker_init.connect
def _init_main(**_: Any) -> None:
    prometheus_endpoint.start()


@worker_process_init.connect
def _init_process(**_: Any) -> None:
    configure_torch(get_settings())
    get_context()


@worker_process_shutdown.connect
def _process_gone(**_: Any) -> None:
    prometheus_endpoint.child_exited(os.getpid())


@app.task(
    bind=True,
    name=TaskName.INFER,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def infer(self: Task, job_id: str) -> None:
    ctx = get_context()
    token = job_id_var.set(job_id)
    try:
        run_inference_job(ctx, uuid.UUID(job_id), self.request.hostname or "unknown")
    except OperationalError:
        raise  # database hiccup: retried with backoff; the job row is still queued/running
    except SoftTimeLimitExceeded:
        log.warning("job exceeded its soft time limit of %s s", self.soft_time_limit)
        with ctx.sessions() as session:
            jobs.fail(
                session,
                uuid.UUID(job_id),
                TimeLimitExceeded(
                    f"the job ran longer than its {self.soft_time_limit:g} s time limit and "
                    "was stopped; results stored so far are kept. Split it into smaller jobs."
                ),
            )
    except Exception:
        # Anything else is a bug or an unreadable model: fail the job visibly, never leave
        # it "running". The trace goes to the log, not to the client.
        log.exception("job failed unexpectedly")
        with ctx.sessions() as session:
            jobs.fail(
                session,
                uuid.UUID(job_id),
                AppError("the worker failed while processing this job; it has been logged"),
            )
    finally:
        job_id_var.reset(token)


@app.task(
    bind=True,
    name=TaskName.IMPORT_DATASET,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def import_dataset(self: Task, version_id: str) -> None:
    import_dataset_version(version_id, self.request.hostname or "unknown")


@app.task(
    name=TaskName.GUARD_PLANS,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def guard_plans(version_id: str) -> None:
    guard_version(get_context(), uuid.UUID(version_id))
