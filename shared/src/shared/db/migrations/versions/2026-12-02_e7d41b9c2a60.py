"""Per-tenant retention period: final jobs older than it are deleted by housekeeping.

Revision ID: e7d41b9c2a60
Revises: a1f0e2d3c4b5
Create Date: 2026-12-02 22:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e7d41b9c2a60"
down_revision: str | Sequence[str] | None = "a1f0e2d3c4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: keep jobs until they are deleted explicitly (the default).
    op.add_column("tenant", sa.Column("retention_days", sa.Integer(), nullable=True))
    op.create_check_constraint(
        "ck_tenant_retention_days", "tenant", "retention_days IS NULL OR retention_days >= 1"
    )


def downgrade() -> None:
    op.drop_constraint("ck_tenant_retention_days", "tenant", type_="check")
    op.drop_column("tenant", "retention_days")
