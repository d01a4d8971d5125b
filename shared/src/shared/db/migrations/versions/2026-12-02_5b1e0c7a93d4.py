"""audit: append-only table with a hash chain; client request ids; API key expiry

Revision ID: 5b1e0c7a93d4
Revises: ee5464174e2c
Create Date: 2026-12-02 19:20:00

The chain is computed by a BEFORE INSERT trigger, so every writer (API, workers, command
line, the deletion code) is covered without calling anything. An advisory transaction lock
serialises writers, so two concurrent inserts never link to the same predecessor.
`audit_event_hash` is the one definition of a row's hash: the trigger and `medimg audit
verify` both call it. Audit rows outlive tenants and keys (PHI deletion removes tenants,
never their audit trail), so the foreign keys to tenant and api_key are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5b1e0c7a93d4"
down_revision: str | None = "ee5464174e2c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HASH_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_event_hash(e audit_event, prev text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT encode(sha256(convert_to(concat_ws(E'\\x1f',
    e.seq::text, e.id::text,
    to_char(e.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'),
    coalesce(e.tenant_id::text, ''), coalesce(e.api_key_id::text, ''),
    coalesce(e.key_prefix, ''), e.action, e.resource_type, coalesce(e.resource_id, ''),
    coalesce(e.request_id, ''), coalesce(e.client_request_id, ''),
    coalesce(e.detail::text, '{}'), coalesce(prev, '')
  ), 'UTF8')), 'hex')
$$;
"""

CHAIN_TRIGGER = """
CREATE OR REPLACE FUNCTION audit_event_chain() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE last_hash text;
BEGIN
  -- One writer at a time until commit: the next row must see this one as its predecessor.
  PERFORM pg_advisory_xact_lock(7345112093);
  SELECT row_hash INTO last_hash FROM audit_event ORDER BY seq DESC LIMIT 1;
  NEW.seq := nextval('audit_event_seq_seq');
  NEW.prev_hash := last_hash;
  NEW.row_hash := audit_event_hash(NEW, last_hash);
  RETURN NEW;
END $$;
CREATE TRIGGER audit_event_chain BEFORE INSERT ON audit_event
  FOR EACH ROW EXECUTE FUNCTION audit_event_chain();
"""

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_event_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP
    USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
  FOR EACH ROW EXECUTE FUNCTION audit_event_refuse_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_event
  FOR EACH STATEMENT EXECUTE FUNCTION audit_event_refuse_change();
"""


def upgrade() -> None:
    op.add_column("api_key", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("audit_event", sa.Column("client_request_id", sa.String(64), nullable=True))
    op.add_column("audit_event", sa.Column("prev_hash", sa.String(64), nullable=True))
    op.add_column("audit_event", sa.Column("row_hash", sa.String(64), nullable=True))
    op.execute("CREATE SEQUENCE audit_event_seq_seq")
    op.add_column("audit_event", sa.Column("seq", sa.BigInteger, nullable=True))
    op.execute("ALTER SEQUENCE audit_event_seq_seq OWNED BY audit_event.seq")
    op.execute("ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS audit_event_tenant_id_fkey")
    op.execute("ALTER TABLE audit_event DROP CONSTRAINT IF EXISTS audit_event_api_key_id_fkey")
    op.execute(HASH_FUNCTION)
    # Chain the rows written before this migration, oldest first.
    op.execute(
        """
        DO $$
        DECLARE r audit_event; last_hash text;
        BEGIN
          FOR r IN SELECT * FROM audit_event ORDER BY created_at, id LOOP
            r.seq := nextval('audit_event_seq_seq');
            r.prev_hash := last_hash;
            r.row_hash := audit_event_hash(r, last_hash);
            UPDATE audit_event SET seq = r.seq, prev_hash = r.prev_hash, row_hash = r.row_hash
              WHERE id = r.id;
            last_hash := r.row_hash;
          END LOOP;
        END $$;
        """
    )
    op.alter_column("audit_event", "seq", nullable=False)
    op.alter_column("audit_event", "row_hash", nullable=False)
    op.create_unique_constraint("uq_audit_event_seq", "audit_event", ["seq"])
    op.execute(CHAIN_TRIGGER)
    op.execute(APPEND_ONLY)


def downgrade() -> None:
    op.execute("DROP TRIGGER audit_event_no_truncate ON audit_event")
    op.execute("DROP TRIGGER audit_event_append_only ON audit_event")
    op.execute("DROP TRIGGER audit_event_chain ON audit_event")
    op.execute("DROP FUNCTION audit_event_refuse_change()")
    op.execute("DROP FUNCTION audit_event_chain()")
    op.execute("DROP FUNCTION audit_event_hash(audit_event, text)")
    op.drop_constraint("uq_audit_event_seq", "audit_event")
    for column in ("seq", "row_hash", "prev_hash", "client_request_id"):
        op.drop_column("audit_event", column)
    op.drop_column("api_key", "expires_at")
