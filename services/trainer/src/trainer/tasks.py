"""trainer.fine_tune: run one training job (task ids are job ids; the row is the truth).

Delivery is at least once (acks_late, reject on worker loss): a delivery after the
trainer process died claims the job again and resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import logging
import uuid

from celery import Task
from celery.exceptions import Retry
from sqlalchemy.exc import OperationalError

from shared.db.models import TrainingJob
from shared.errors import AppError, AttemptsExceeded
from shared.logs import job_id as job_id_var
from shared.tasks import TaskName
from trainer import jobstate
from trainer.celery_app import app
from trainer.classification_job import run_classification
from trainer.context import JobSpec, TrainerContext, get_context
from trainer.fit import Cancelled
from trainer.progress import Reporter

log = logging.getLogger(__name__)


def _claim(ctx: TrainerContext, job_id: uuid.UUID, worker: str) -> JobSpec | jobstate.Busy | None:
    with ctx.sessions() as session:
        claimed = jobstate.claim(session, job_id, worker, ctx.settings.job_lease_seconds)
        if not isinstance(claimed, TrainingJob):
            return claimed
        return JobSpec(
            id=claimed.id,
            tenant_id=claimed.tenant_id,
            task=claimed.task,
            dataset_version_id=claimed.dataset_version_id,
            architecture=claimed.architecture,
            start_from=claimed.start_from,
            params=dict(claimed.params),
            monitor=claimed.monitor,
            model_name=claimed.model_name,
            promote=claimed.promote,
            checkpoint_key=claimed.checkpoint_key,
            attempts=claimed.attempts,
            worker=worker,
        )


def run_training_job(ctx: TrainerContext, job_id: uuid.UUID, worker: str) -> float | None:
    """Run (or resume) a job to its end.

    Returns:
        None when done (or nothing to do); seconds to wait when another live worker holds it.
    """
    claimed = _claim(ctx, job_id, worker)
    if claimed is None:
        return None
    if isinstance(claimed, jobstate.Busy):
        return claimed.seconds
    job = claimed
    if job.attempts > ctx.settings.max_attempts:
        with ctx.sessions() as session:
            jobstate.fail(
                session,
                job.id,
                AttemptsExceeded(ctx.settings.max_attempts),
            )
        return None
    if job.checkpoint_key:
        log.info("resuming training job from checkpoint (attempt %d)", job.attempts)
    reporter = Reporter(ctx, job, int(job.params.get("epochs", 0)))
    try:
        if job.task == "detection":
            from trainer.detection_job import run_detection  # detection stack only when needed

            ref = run_detection(ctx, job, reporter)
        elif job.task == "segmentation":
            from trainer.segmentation.job import run_segmentation

            ref = run_segmentation(ctx, job, reporter)
        else:
            ref = run_classification(ctx, job, reporter)
        log.info("training job succeeded: registered %s", ref)
    except Cancelled:
        log.info("training job cancelled; stopped")
    except AppError as exc:
        with ctx.sessions() as session:
            jobstate.fail(session, job.id, exc, worker)
    finally:
        reporter.stop()
    return None


@app.task(
    bind=True,
    name=TaskName.FINE_TUNE,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=30,
    max_retries=8,
)
def fine_tune(self: Task, training_job_id: str) -> None:
    ctx = get_context()
    job_id = uuid.UUID(training_job_id)
    token = job_id_var.set(training_job_id)
    worker = self.request.hostname or "unknown"
    try:
        wait = run_training_job(ctx, job_id, worker)
        if wait is not None:
            # A duplicate delivery while another trainer holds the job: come back after
            # its lease would have run out, in case that trainer died.
            raise self.retry(countdown=wait, max_retries=None)
    except (OperationalError, Retry):
        raise  # database hiccup (retried with backoff) or a deliberate later retry
    except Exception:
        log.exception("training job failed unexpectedly")
        with ctx.sessions() as session:
            jobstate.fail(
                session,
                job_id,
                AppError("the trainer failed while running this job; it has been logged"),
                worker,
            )
    finally:
        job_id_var.reset(token)
