"""dataset items: segmentation mask (stored label map)

Revision ID: 7c78344a91ea
Revises: ee5464174e2c
Create Date: 2026-12-02 19:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c78344a91ea"
down_revision: str | None = "ee5464174e2c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dataset_item", sa.Column("mask_key", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("dataset_item", "mask_key")
