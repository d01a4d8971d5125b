"""model_version.runtime_plans + calibration_key; NOTIFY when a job reaches a final status

Revision ID: 3f9a61c2d7b4
Revises: ee5464174e2c
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "3f9a61c2d7b4"
down_revision: str | None = "ee5464174e2c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("model_version", sa.Column("runtime_plans", postgresql.JSONB(), nullable=True))
    op.add_column("model_version", sa.Column("calibration_key", sa.String(255), nullable=True))
    # Long-poll (GET /v1/jobs/{id}?wait=): one trigger covers every writer (workers,
    # cancel, reconciler), so no code path can forget to announce a finished job.
    op.execute(
        """
        CREATE FUNCTION medimg_notify_job_final() RETURNS trigger AS $$
        BEGIN
          PERFORM pg_notify('medimg_job_final', NEW.id::text);
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        """
    )
    op.execute(
        """
        CREATE TRIGGER job_final_notify AFTER UPDATE OF status ON job
        FOR EACH ROW WHEN (NEW.status IN ('succeeded', 'failed', 'cancelled')
                           AND OLD.status IS DISTINCT FROM NEW.status)
        EXECUTE FUNCTION medimg_notify_job_final();
        """
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS job_final_notify ON job")
    op.execute("DROP FUNCTION IF EXISTS medimg_notify_job_final()")
    op.drop_column("model_version", "calibration_key")
    op.drop_column("model_version", "runtime_plans")
