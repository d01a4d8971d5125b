"""Per-tenant callback settings: secret generation (rotation) and host allow-list.

No secret is stored: shared.callbacks.tenants derives each generation's secret from the
server's MEDIMG_CALLBACK_SECRET and the tenant id.

Revision ID: c3a9e5f7b1d2
Revises: a1f0e2d3c4b5
Create Date: 2026-12-02 22:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "c3a9e5f7b1d2"
down_revision: str | Sequence[str] | None = "a1f0e2d3c4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tenant_callback_settings",
        sa.Column(
            "tenant_id",
            sa.Uuid(),
            sa.ForeignKey("tenant.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("secret_generation", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("previous_valid_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("allowed_hosts", postgresql.JSONB(), nullable=True),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )


def downgrade() -> None:
    op.drop_table("tenant_callback_settings")
