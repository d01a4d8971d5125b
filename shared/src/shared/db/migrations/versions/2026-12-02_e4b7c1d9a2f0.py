"""training_job.recipe: how each setting of a training job was chosen (caller or derived).

Revision ID: e4b7c1d9a2f0
Revises: a1f0e2d3c4b5
Create Date: 2026-12-02 22:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "e4b7c1d9a2f0"
down_revision: str | Sequence[str] | None = "a1f0e2d3c4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("training_job", sa.Column("recipe", JSONB, nullable=True))


def downgrade() -> None:
    op.drop_column("training_job", "recipe")
