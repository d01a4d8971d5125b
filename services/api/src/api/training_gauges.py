"""Training progress for Prometheus, read from Postgres at scrape time.

Trainers run in other processes (other hosts); the database is the one place that knows
every job's progress, so the API exposes it like the job gauges.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import JobStatus, TrainingEpoch, TrainingJob
from shared.schemas.training import epochs_done


def progress_ratio(progress: dict[str, Any]) -> float:
    """Fraction of the planned epochs done, counting the running epoch's steps."""
    epochs = progress.get("epochs") or 0
    return min(epochs_done(progress) / epochs, 1.0) if epochs else 0.0


async def training_families(session: AsyncSession) -> list[Any]:
    jobs = GaugeMetricFamily(
        "medimg_training_jobs", "Training jobs in the database by status", labels=["status"]
    )
    for status, count in (
        await session.execute(select(TrainingJob.status, func.count()).group_by(TrainingJob.status))
    ).all():
        jobs.add_metric([status], count)
    epoch = GaugeMetricFamily(
        "medimg_training_epoch",
        "Current epoch of each running training job",
        labels=["job_id", "model"],
    )
    ratio = GaugeMetricFamily(
        "medimg_training_progress_ratio",
        "Share of planned epochs done by each running training job (0-1)",
        labels=["job_id", "model"],
    )
    running = await session.execute(
        select(TrainingJob.id, TrainingJob.model_name, TrainingJob.progress).where(
            TrainingJob.status == JobStatus.RUNNING
        )
    )
    for job_id, model, progress in running.all():
        epoch.add_metric([str(job_id), model], float((progress or {}).get("epoch") or 0))
        ratio.add_metric([str(job_id), model], progress_ratio(progress or {}))
    total = await session.scalar(select(func.count()).select_from(TrainingEpoch))
    epochs = CounterMetricFamily(
        "medimg_training_epochs", "Training epochs finished, all jobs together"
    )
    epochs.add_metric([], float(total or 0))
    return [jobs, epoch, ratio, epochs]
