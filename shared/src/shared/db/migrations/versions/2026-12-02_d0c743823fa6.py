"""DICOM integration: calling AEs, PACS endpoints, destinations, routing rules, studies

Revision ID: d0c743823fa6
Revises: ee5464174e2c
Create Date: 2026-12-02 19:10:00
"""

from __future__ import annotations

from typing import Any

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "d0c743823fa6"
down_revision: str | None = "ee5464174e2c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOW = sa.text("now()")


def _id() -> sa.Column[Any]:
    return sa.Column("id", sa.Uuid(), primary_key=True)


def _created() -> sa.Column[Any]:
    return sa.Column("created_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False)


def _tenant() -> sa.Column[Any]:
    return sa.Column("tenant_id", sa.Uuid(), sa.ForeignKey("tenant.id"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "dicom_calling_ae",
        _id(),
        _created(),
        _tenant(),
        sa.Column("ae_title", sa.String(16), nullable=False, unique=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
    )
    op.create_index("ix_dicom_calling_ae_tenant_id", "dicom_calling_ae", ["tenant_id"])
    op.create_table(
        "pacs_endpoint",
        _id(),
        _created(),
        _tenant(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("base_url", sa.Text(), nullable=False),
        sa.Column("auth", sa.String(16), nullable=False, server_default="none"),
        sa.Column("username", sa.String(255)),
        sa.Column("secret", sa.Text()),
        sa.Column("verify_tls", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.UniqueConstraint("tenant_id", "name"),
        sa.CheckConstraint("auth IN ('none', 'basic', 'bearer')", name="ck_pacs_endpoint_auth"),
    )
    op.create_table(
        "dicom_destination",
        _id(),
        _created(),
        _tenant(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("pacs_id", sa.Uuid(), sa.ForeignKey("pacs_endpoint.id")),
        sa.Column("ae_title", sa.String(16)),
        sa.Column("host", sa.String(255)),
        sa.Column("port", sa.Integer()),
        sa.UniqueConstraint("tenant_id", "name"),
        sa.CheckConstraint("kind IN ('stow', 'cstore')", name="ck_dicom_destination_kind"),
    )
    op.create_table(
        "dicom_routing_rule",
        _id(),
        _created(),
        _tenant(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False, server_default="100"),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("match", postgresql.JSONB(), nullable=False),
        sa.Column("model_ref", sa.String(160), nullable=False),
        sa.Column("params", postgresql.JSONB(), nullable=False),
        sa.Column("priority", sa.String(16), nullable=False, server_default="routine"),
        sa.Column("destination_ids", postgresql.JSONB(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.UniqueConstraint("tenant_id", "name"),
    )
    op.create_index(
        "ix_dicom_routing_rule_tenant_id_position", "dicom_routing_rule", ["tenant_id", "position"]
    )
    op.create_table(
        "dicom_study",
        _id(),
        _created(),
        _tenant(),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("calling_ae", sa.String(16)),
        sa.Column("pacs_id", sa.Uuid(), sa.ForeignKey("pacs_endpoint.id")),
        sa.Column("study_instance_uid", sa.String(64), nullable=False),
        sa.Column("requested", postgresql.JSONB(), nullable=False),
        sa.Column("summary", postgresql.JSONB(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), sa.ForeignKey("dicom_routing_rule.id")),
        sa.Column("job_id", sa.Uuid(), sa.ForeignKey("job.id")),
        sa.Column("reason", sa.Text()),
        sa.Column("error_type", sa.String(64)),
        sa.Column("reidentify", postgresql.JSONB()),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_NOW, nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'pulling', 'routed', 'unmatched', 'failed')",
            name="ck_dicom_study_status",
        ),
        sa.CheckConstraint("source IN ('dimse', 'dicomweb')", name="ck_dicom_study_source"),
    )
    op.create_index(
        "ix_dicom_study_tenant_id_status_created_at",
        "dicom_study",
        ["tenant_id", "status", "created_at"],
    )
    op.create_index("ix_dicom_study_status_created_at", "dicom_study", ["status", "created_at"])


def downgrade() -> None:
    for table in (
        "dicom_study",
        "dicom_routing_rule",
        "dicom_destination",
        "pacs_endpoint",
        "dicom_calling_ae",
    ):
        op.drop_table(table)
