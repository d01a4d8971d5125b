"""dataset_version.attempts / worker / lease_expires_at: imports are leased like jobs.

Revision ID: 4d2c8e1a7b90
Revises: b7e2d5c1f9a3
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4d2c8e1a7b90"
down_revision: str | Sequence[str] | None = "b7e2d5c1f9a3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "dataset_version",
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
    )
    op.add_column("dataset_version", sa.Column("worker", sa.String(255), nullable=True))
    op.add_column(
        "dataset_version",
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    for column in ("lease_expires_at", "worker", "attempts"):
        op.drop_column("dataset_version", column)
