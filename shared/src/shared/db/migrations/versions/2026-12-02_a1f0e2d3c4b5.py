"""Merge the branches opened in parallel on 2026-12-02 (runtime plans, audit chain, segmentation
masks, DICOM nodes) back into one head.

Revision ID: a1f0e2d3c4b5
Revises: 3f9a61c2d7b4, 5b1e0c7a93d4, 7c78344a91ea, d0c743823fa6
Create Date: 2026-12-02 21:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "a1f0e2d3c4b5"
down_revision: str | Sequence[str] | None = (
    "3f9a61c2d7b4",
    "5b1e0c7a93d4",
    "7c78344a91ea",
    "d0c743823fa6",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
