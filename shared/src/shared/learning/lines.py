"""Model lines: the locked test set fixed at a model's first trained version, and its policy.

The locked test set is the test split of the dataset version the line's first version was
trained on. It is read from the database each time, never copied, so it cannot drift; its
fingerprint (a hash over the sorted image hashes) is shown so anyone can check.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.db.base import utcnow
from shared.db.learning_models import ModelLine, ResultFeedback
from shared.db.models import DatasetItem, JobStatus, Model, ModelVersion, Split, TrainingJob
from shared.errors import Conflict
from shared.schemas.learning import RetrainingPolicy


@dataclass(frozen=True)
class LockedSet:
    """What must never be trained on: the locked images and every patient group among them."""

    dataset_version_id: uuid.UUID
    shas: frozenset[str]
    groups: frozenset[str]

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(sorted(self.shas)).encode()).hexdigest()


def locked_set(session: Session, line: ModelLine) -> LockedSet:
    rows = session.execute(
        select(DatasetItem.sha256, DatasetItem.group_id).where(
            DatasetItem.dataset_version_id == line.locked_dataset_version_id,
            DatasetItem.split == Split.TEST,
        )
    ).all()
    return LockedSet(
        line.locked_dataset_version_id,
        frozenset(r.sha256 for r in rows),
        frozenset(r.group_id for r in rows if r.group_id),
    )


def _first_training(session: Session, model: Model) -> TrainingJob:
    """The succeeded training job that produced the model's earliest trained version."""
    job = session.scalar(
        select(TrainingJob)
        .join(ModelVersion, ModelVersion.id == TrainingJob.result_model_version_id)
        .where(ModelVersion.model_id == model.id, TrainingJob.status == JobStatus.SUCCEEDED)
        .order_by(ModelVersion.version)
        .limit(1)
    )
    if job is None:
        raise Conflict(
            f"model {model.name!r} has no version trained on this platform; a model line needs "
            "one (its dataset version's test split becomes the locked test set)",
            model=model.name,
        )
    return job


def next_run(policy: RetrainingPolicy, now: datetime | None = None) -> datetime | None:
    if policy.trigger != "schedule" or not policy.enabled:
        return None
    return (now or utcnow()) + timedelta(hours=policy.interval_hours)


def get_line(session: Session, model: Model) -> ModelLine | None:
    return session.scalar(select(ModelLine).where(ModelLine.model_id == model.id))


def put_line(session: Session, model: Model, policy: RetrainingPolicy) -> tuple[ModelLine, bool]:
    """Create the model's line (locking its test set) or replace its policy.

    Returns:
        The line and whether it was created now. The caller commits.

    Raises:
        Conflict: the model is shared or has no version trained here.
    """
    if model.tenant_id is None:
        raise Conflict(
            f"model {model.name!r} is shared by every tenant; feedback of one tenant may "
            "not retrain it (train a tenant model first)",
            model=model.name,
        )
    line = get_line(session, model)
    if line is not None:
        old = RetrainingPolicy.model_validate(line.policy)
        line.policy = policy.model_dump(mode="json")
        if (old.trigger, old.interval_hours, old.enabled) != (
            policy.trigger,
            policy.interval_hours,
            policy.enabled,
        ):
            line.next_run_at = next_run(policy)
        session.flush()
        return line, False
    first = _first_training(session, model)
    line = ModelLine(
        id=uuid.uuid4(),
        model_id=model.id,
        tenant_id=model.tenant_id,
        locked_dataset_version_id=first.dataset_version_id,
        base_dataset_version_id=first.dataset_version_id,
        recipe={
            "task": first.task,
            "architecture": first.architecture,
            "monitor": first.monitor,
            "params": dict(first.params),
        },
        policy=policy.model_dump(mode="json"),
        # Only reviews given from now on count towards the first trigger.
        feedback_watermark=utcnow(),
        next_run_at=next_run(policy),
        created_at=utcnow(),
    )
    session.add(line)
    session.flush()
    return line, True


def new_reviews(session: Session, line: ModelLine) -> int:
    """Images of this model reviewed after the line's watermark (each image counts once)."""
    query = select(func.count(func.distinct(ResultFeedback.job_image_id))).where(
        ResultFeedback.model_id == line.model_id, ResultFeedback.tenant_id == line.tenant_id
    )
    if line.feedback_watermark is not None:
        query = query.where(ResultFeedback.created_at > line.feedback_watermark)
    return int(session.scalar(query) or 0)
