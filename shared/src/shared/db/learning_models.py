"""The learning loop's tables (issue 17): feedback, model lines, generations, alias history.

Rows that point at tenant data which PHI deletion or retention removes (jobs, dataset
versions, training jobs) cascade with it; the audit log keeps the story.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from shared.db.base import Base, CreatedAt, UUIDPrimaryKey


class FeedbackKind(StrEnum):
    CONFIRM = "confirm"
    CORRECT = "correct"


class GenerationStatus(StrEnum):
    TRAINING = "training"  # the challenger's training job runs
    EVALUATING = "evaluating"  # staged; the gate task measures it on the locked test set
    AWAITING_APPROVAL = "awaiting_approval"  # passed; policy wants an admin's decision
    PROMOTED = "promoted"
    REFUSED = "refused"  # failed the gate
    REJECTED = "rejected"  # passed, but an admin said no
    FAILED = "failed"  # training or evaluation failed


ACTIVE_GENERATION = (GenerationStatus.TRAINING, GenerationStatus.EVALUATING)


def _in(values: type[StrEnum]) -> str:
    return ", ".join(f"'{v.value}'" for v in values)


class ResultFeedback(UUIDPrimaryKey, CreatedAt, Base):
    """A reviewer's confirmation or correction of one job image's result.

    Append-only: a new correction of the same image is the next `revision`; the newest one
    counts, earlier ones stay readable.
    """

    __tablename__ = "result_feedback"
    __table_args__ = (
        UniqueConstraint("job_image_id", "revision"),
        CheckConstraint(f"kind IN ({_in(FeedbackKind)})", name="kind"),
        Index(None, "model_id", "created_at"),
    )

    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job.id", ondelete="CASCADE"), index=True)
    job_image_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("job_image.id", ondelete="CASCADE"))
    image_index: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer)
    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model.id"))
    model_version_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model_version.id"))
    kind: Mapped[str] = mapped_column(String(16))
    # The reviewed truth: the label (classification) or the boxes (detection).
    label: Mapped[str | None] = mapped_column(String(100))
    boxes: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    comment: Mapped[str] = mapped_column(Text, default="")
    # HMAC pseudonym of the patient the reviewer named (never the id in clear).
    group_id: Mapped[str | None] = mapped_column(String(128))
    # Who: no foreign key, like the audit log (keys may be revoked and deleted).
    api_key_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    key_prefix: Mapped[str | None] = mapped_column(String(16))


class ModelLine(UUIDPrimaryKey, CreatedAt, Base):
    """A model's learning loop: its locked test set, recipe, feedback dataset and policy."""

    __tablename__ = "model_line"

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model.id"), unique=True)
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    # The test split of this dataset version is the line's locked test set, fixed forever.
    locked_dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE")
    )
    # The original training set feedback merges with (the first version's dataset version).
    base_dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE")
    )
    # {"task", "architecture", "monitor", "params"} of the first trained version.
    recipe: Mapped[dict[str, Any]] = mapped_column(JSONB)
    feedback_dataset_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset.id", ondelete="SET NULL")
    )
    # shared.schemas.learning.RetrainingPolicy as JSON.
    policy: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Feedback newer than this has not gone into a generation yet.
    feedback_watermark: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    next_run_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class ModelGeneration(UUIDPrimaryKey, CreatedAt, Base):
    """One retraining round: data built, challenger trained, gated, decided."""

    __tablename__ = "model_generation"
    __table_args__ = (
        CheckConstraint(f"status IN ({_in(GenerationStatus)})", name="status"),
        Index(None, "model_line_id", "created_at"),
    )

    model_line_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("model_line.id", ondelete="CASCADE")
    )
    tenant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("tenant.id"))
    trigger: Mapped[str] = mapped_column(String(16))  # reviews | schedule | manual
    status: Mapped[str] = mapped_column(String(24))
    feedback_dataset_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE")
    )
    training_dataset_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_version.id", ondelete="CASCADE")
    )
    training_job_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("training_job.id", ondelete="CASCADE")
    )
    champion_version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("model_version.id"))
    challenger_version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("model_version.id"))
    margin: Mapped[float] = mapped_column(Float)
    # shared.schemas.learning.GateReport as JSON: numbers, intervals, checks.
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    passed: Mapped[bool | None] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)
    decided_by: Mapped[str | None] = mapped_column(String(64))  # "policy" or a key prefix
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    gate_sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # {"reviews": n, "feedback_items": n, "locked_patient_items": n, ...}
    data_summary: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict)


class AliasChange(UUIDPrimaryKey, CreatedAt, Base):
    """Every move of a model alias (written by `shared.registry.set_alias`): rollback's memory."""

    __tablename__ = "alias_change"
    __table_args__ = (Index(None, "model_id", "alias", "created_at"),)

    model_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("model.id"))
    alias: Mapped[str] = mapped_column(String(64))
    from_version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE")
    )
    to_version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("model_version.id", ondelete="CASCADE")
    )
