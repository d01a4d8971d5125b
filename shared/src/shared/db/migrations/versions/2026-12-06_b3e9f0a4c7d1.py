"""Per-tenant quotas on active inference jobs, and the partial index that counts them.

Revision ID: b3e9f0a4c7d1
Revises: e7d41b9c2a60
Create Date: 2026-12-06 04:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3e9f0a4c7d1"
down_revision: str | Sequence[str] | None = "e7d41b9c2a60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL: the settings' defaults (MEDIMG_TENANT_MAX_ACTIVE_JOBS, ..._STAT_JOBS); 0: none.
    op.add_column("tenant", sa.Column("max_active_jobs", sa.Integer(), nullable=True))
    op.add_column("tenant", sa.Column("max_active_stat_jobs", sa.Integer(), nullable=True))
    op.create_index(
        "ix_job_active_tenant_priority",
        "job",
        ["tenant_id", "priority"],
        postgresql_where=sa.text("status IN ('queued', 'running')"),
    )


def downgrade() -> None:
    op.drop_index("ix_job_active_tenant_priority", table_name="job")
    op.drop_column("tenant", "max_active_stat_jobs")
    op.drop_column("tenant", "max_active_jobs")
