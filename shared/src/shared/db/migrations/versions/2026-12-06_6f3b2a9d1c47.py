"""training_epoch.fold: per-epoch rows of a cross-validation job are tagged by fold.

Revision ID: 6f3b2a9d1c47
Revises: c3a9e5f7b1d2
Create Date: 2026-12-06 04:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "6f3b2a9d1c47"
down_revision: str | Sequence[str] | None = "c3a9e5f7b1d2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "training_epoch", sa.Column("fold", sa.Integer(), nullable=False, server_default="0")
    )
    # Epoch numbers restart in every fold: unique per (job, fold, epoch).
    op.drop_constraint("uq_training_epoch_training_job_id", "training_epoch", type_="unique")
    op.create_unique_constraint(
        "uq_training_epoch_training_job_id", "training_epoch", ["training_job_id", "fold", "epoch"]
    )


def downgrade() -> None:
    op.drop_constraint("uq_training_epoch_training_job_id", "training_epoch", type_="unique")
    op.execute("DELETE FROM training_epoch WHERE fold > 1")
    op.create_unique_constraint(
        "uq_training_epoch_training_job_id", "training_epoch", ["training_job_id", "epoch"]
    )
    op.drop_column("training_epoch", "fold")
