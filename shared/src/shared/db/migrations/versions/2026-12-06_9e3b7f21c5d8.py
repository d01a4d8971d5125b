"""Learning loop (issue 17): result_feedback, model_line, model_generation, alias_change.

Revision ID: 9e3b7f21c5d8
Revises: 4d2c8e1a7b90
Create Date: 2026-12-06 04:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9e3b7f21c5d8"
down_revision: str | Sequence[str] | None = "4d2c8e1a7b90"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def _id() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("id", sa.Uuid(), primary_key=True)


def _created() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column("created_at", _TS, server_default=sa.func.now(), nullable=False)


def _fk(name: str, target: str, ondelete: str | None = None, **kw: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.Uuid(), sa.ForeignKey(target, ondelete=ondelete), **kw)


def upgrade() -> None:
    op.create_table(
        "result_feedback",
        _id(),
        _created(),
        _fk("tenant_id", "tenant.id", nullable=False),
        _fk("job_id", "job.id", "CASCADE", nullable=False),
        _fk("job_image_id", "job_image.id", "CASCADE", nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _fk("model_id", "model.id", nullable=False),
        _fk("model_version_id", "model_version.id", nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("label", sa.String(100)),
        sa.Column("boxes", postgresql.JSONB()),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("group_id", sa.String(128)),
        sa.Column("api_key_id", sa.Uuid()),
        sa.Column("key_prefix", sa.String(16)),
        sa.UniqueConstraint("job_image_id", "revision"),
        sa.CheckConstraint("kind IN ('confirm', 'correct')", name="kind"),
    )
    op.create_index(None, "result_feedback", ["job_id"])
    op.create_index(None, "result_feedback", ["model_id", "created_at"])
    op.create_table(
        "model_line",
        _id(),
        _created(),
        _fk("model_id", "model.id", nullable=False, unique=True),
        _fk("tenant_id", "tenant.id", nullable=False),
        _fk("locked_dataset_version_id", "dataset_version.id", "CASCADE", nullable=False),
        _fk("base_dataset_version_id", "dataset_version.id", "CASCADE", nullable=False),
        sa.Column("recipe", postgresql.JSONB(), nullable=False),
        _fk("feedback_dataset_id", "dataset.id", "SET NULL"),
        sa.Column("policy", postgresql.JSONB(), nullable=False),
        sa.Column("feedback_watermark", _TS),
        sa.Column("next_run_at", _TS),
    )
    statuses = (
        "'training', 'evaluating', 'awaiting_approval', 'promoted', 'refused', 'rejected', 'failed'"
    )
    op.create_table(
        "model_generation",
        _id(),
        _created(),
        _fk("model_line_id", "model_line.id", "CASCADE", nullable=False),
        _fk("tenant_id", "tenant.id", nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        _fk("feedback_dataset_version_id", "dataset_version.id", "CASCADE"),
        _fk("training_dataset_version_id", "dataset_version.id", "CASCADE", nullable=False),
        _fk("training_job_id", "training_job.id", "CASCADE", nullable=False),
        _fk("champion_version_id", "model_version.id"),
        _fk("challenger_version_id", "model_version.id"),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("gate", postgresql.JSONB()),
        sa.Column("passed", sa.Boolean()),
        sa.Column("reason", sa.Text()),
        sa.Column("decided_by", sa.String(64)),
        sa.Column("decided_at", _TS),
        sa.Column("gate_sent_at", _TS),
        sa.Column("data_summary", postgresql.JSONB(), nullable=False),
        sa.CheckConstraint(f"status IN ({statuses})", name="status"),
    )
    op.create_index(None, "model_generation", ["model_line_id", "created_at"])
    op.create_table(
        "alias_change",
        _id(),
        _created(),
        _fk("model_id", "model.id", nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        _fk("from_version_id", "model_version.id", "CASCADE"),
        _fk("to_version_id", "model_version.id", "CASCADE", nullable=False),
    )
    op.create_index(None, "alias_change", ["model_id", "alias", "created_at"])


def downgrade() -> None:
    for table in ("alias_change", "model_generation", "model_line", "result_feedback"):
        op.drop_table(table)
