"""The audit table is append-only in the database and hash-chained; `medimg audit verify`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack


def _verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": stack.env["DATABASE_URL"]}
    return subprocess.run(
        [sys.executable, "-m", "cli", "audit", "verify"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_audit_rows_cannot_be_updated_or_deleted(
    api: httpx.Client, db: sessionmaker[Session]
) -> None:
    api.get("/v1/jobs").raise_for_status()
    for statement in ("UPDATE audit_event SET action = 'x'", "DELETE FROM audit_event"):
        with db() as session, pytest.raises(DBAPIError, match="append-only"):
            session.execute(text(statement))


def test_chain_verifies_and_tampering_names_the_first_broken_row(
    stack: Stack, api: httpx.Client, db: sessionmaker[Session]
) -> None:
    api.get("/v1/audit").raise_for_status()
    intact = _verify(stack)
    assert intact.returncode == 0, intact.stderr
    assert "audit chain intact" in intact.stdout
    with db() as session:
        seq, detail = session.execute(
            text("SELECT seq, detail::text FROM audit_event ORDER BY seq LIMIT 1")
        ).one()
    # As the superuser an attacker with database access would be: bypass the trigger.
    with db() as session:
        session.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        session.execute(
            text("UPDATE audit_event SET detail = '{\"forged\": true}' WHERE seq = :s"), {"s": seq}
        )
        session.commit()
    try:
        broken = _verify(stack)
        assert broken.returncode == 1
        assert f"seq={seq}" in broken.stderr and "changed" in broken.stderr
    finally:
        with db() as session:
            session.execute(
                text("UPDATE audit_event SET detail = CAST(:d AS jsonb) WHERE seq = :s"),
                {"d": detail, "s": seq},
            )
            session.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
            session.commit()
    assert _verify(stack).returncode == 0
