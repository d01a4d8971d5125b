"""job_image / dataset_item.burned_in_annotation: DICOM that declares text in its pixels.

Revision ID: b7e2d5c1f9a3
Revises: a1f0e2d3c4b5
Create Date: 2026-12-02 23:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b7e2d5c1f9a3"
down_revision: str | Sequence[str] | None = "a1f0e2d3c4b5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("job_image", "dataset_item"):
        op.add_column(
            table,
            sa.Column(
                "burned_in_annotation", sa.Boolean(), nullable=False, server_default=sa.false()
            ),
        )


def downgrade() -> None:
    for table in ("job_image", "dataset_item"):
        op.drop_column(table, "burned_in_annotation")
