"""Audit rows keep no foreign keys to tenant or API key, so they outlive deleted tenants.

The model (shared.db.models.AuditEvent) dropped them when the audit log became append-only,
but no migration did: deleting a tenant or key that had audit events failed on the
constraint. Dropped if present (databases made from the models never had them).

Revision ID: c8d2e6f1a9b4
Revises: b3e9f0a4c7d1
Create Date: 2026-12-06 04:35:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c8d2e6f1a9b4"
down_revision: str | Sequence[str] | None = "b3e9f0a4c7d1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONSTRAINTS = ("fk_audit_event_api_key_id_api_key", "fk_audit_event_tenant_id_tenant")


def upgrade() -> None:
    for name in _CONSTRAINTS:
        op.execute(f"ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS {name}")


def downgrade() -> None:
    # Not restored: rows of deleted tenants and keys would violate them.
    pass
