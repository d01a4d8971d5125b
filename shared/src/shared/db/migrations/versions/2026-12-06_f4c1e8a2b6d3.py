"""dicom_destination kind `fhir`: results posted to a FHIR server as a transaction.

A FHIR destination has a base URL, an auth method with its secret, and TLS verification
(on by default), like a DICOMweb PACS endpoint; deliveries reuse the DICOM result outbox.

Revision ID: f4c1e8a2b6d3
Revises: d0c743823fa6
Create Date: 2026-12-06 04:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f4c1e8a2b6d3"
down_revision: str | Sequence[str] | None = "d0c743823fa6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "dicom_destination"


def upgrade() -> None:
    op.add_column(TABLE, sa.Column("base_url", sa.Text(), nullable=True))
    op.add_column(TABLE, sa.Column("auth", sa.String(16), nullable=True))
    op.add_column(TABLE, sa.Column("username", sa.String(255), nullable=True))
    op.add_column(TABLE, sa.Column("secret", sa.Text(), nullable=True))
    op.add_column(
        TABLE,
        sa.Column("verify_tls", sa.Boolean(), nullable=False, server_default=sa.true()),
    )
    op.drop_constraint("ck_dicom_destination_kind", TABLE, type_="check")
    op.create_check_constraint(
        "ck_dicom_destination_kind", TABLE, "kind IN ('stow', 'cstore', 'fhir')"
    )
    op.create_check_constraint(
        "ck_dicom_destination_auth", TABLE, "auth IS NULL OR auth IN ('none', 'basic', 'bearer')"
    )


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM {TABLE} WHERE kind = 'fhir'"))
    op.drop_constraint("ck_dicom_destination_auth", TABLE, type_="check")
    op.drop_constraint("ck_dicom_destination_kind", TABLE, type_="check")
    op.create_check_constraint("ck_dicom_destination_kind", TABLE, "kind IN ('stow', 'cstore')")
    for column in ("verify_tls", "secret", "username", "auth", "base_url"):
        op.drop_column(TABLE, column)
