"""The end of a training job: model card, registration, promotion, success, in one commit."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from shared.db.models import Dataset, DatasetVersion, Model, ModelVersion
from shared.registry import PRODUCTION, alias_target, register_version, set_alias
from shared.schemas.models import DataProvenance, ModelCard
from shared.schemas.training import LOWER_IS_BETTER
from trainer import jobstate
from trainer.context import JobSpec, TrainerContext
from trainer.fit import Cancelled


def dataset_provenance(
    session: Session, dataset_version_id: Any
) -> tuple[DataProvenance, str, list[str]]:
    """Where the training data came from (for the card), the dataset's name and labels."""
    version = session.scalar(
        select(DatasetVersion)
        .where(DatasetVersion.id == dataset_version_id)
        .options(selectinload(DatasetVersion.dataset))
    )
    assert version is not None  # checked when the job was created; versions are immutable
    dataset: Dataset = version.dataset
    stats = version.stats or {}
    spec = version.split_spec or {}
    provenance = DataProvenance(
        source=(
            f"dataset {dataset.name!r} version {version.version} ({version.source_format} "
            f"upload, sha256 {version.upload_sha256}); {dataset.description}".strip()
        ),
        licence=str(stats.get("licence") or spec.get("licence") or "as declared by the uploader"),
        citation=str(stats.get("reference") or ""),
        split=f"stored split {spec}; counts {stats.get('counts', stats.get('splits', {}))}",
    )
    return provenance, dataset.name, list(version.labels)


def versions_record() -> dict[str, str]:
    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Incumbent:
    """The version the `production` alias points at, and its score on this job's test split."""

    ref: str
    value: float | None


def production_version(session: Session, model_name: str) -> ModelVersion | None:
    model = session.scalar(select(Model).where(Model.name == model_name))
    return None if model is None else alias_target(session, model, PRODUCTION)


def promotion_decision(
    monitor: str, value: float | None, incumbent: Incumbent | None
) -> tuple[bool, str]:
    if incumbent is None:
        return True, "no production version yet"
    if value is None:
        return False, f"the new version has no test {monitor}"
    if incumbent.value is None:
        return True, f"{incumbent.ref} has no comparable test {monitor} on this dataset"
    better = value < incumbent.value if monitor in LOWER_IS_BETTER else value > incumbent.value
    verdict = "beats" if better else "does not beat"
    return better, (
        f"test {monitor} {value:.4f} {verdict} {incumbent.ref} ({incumbent.value:.4f}) "
        "on this job's test split"
    )


def publish(
    ctx: TrainerContext,
    job: JobSpec,
    card: ModelCard,
    weights: Path,
    *,
    test_metrics: dict[str, Any],
    value: float | None,
    incumbent: Incumbent | None,
    progress: dict[str, Any],
) -> str:
    """Register the version, move `production` if asked and better, mark the job succeeded.

    One transaction: a job cancelled meanwhile registers nothing and stays cancelled.

    Returns:
        The new version's ``name:version``.

    Raises:
        Cancelled: the job stopped running before the commit.
    """
    with ctx.sessions() as session:
        version = register_version(session, ctx.store, card, weights, job.tenant_id)
        promoted: bool | None = None
        if job.promote:
            promoted, reason = promotion_decision(job.monitor, value, incumbent)
            test_metrics = {**test_metrics, "promotion": {"promoted": promoted, "reason": reason}}
            if promoted:
                set_alias(session, version, PRODUCTION)
        ok = jobstate.succeed(
            session,
            job.id,
            job.worker,
            test_metrics=test_metrics,
            model_version_id=version.id,
            promoted=promoted,
            progress=progress,
        )
        if not ok:
            session.rollback()
            raise Cancelled
        ref = version.ref
        session.commit()
    return ref
