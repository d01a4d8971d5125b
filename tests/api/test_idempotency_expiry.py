"""Idempotency records expire after MEDIMG_IDEMPOTENCY_TTL_HOURS (cleaned every second here)."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.stack import Stack
from shared.db.base import utcnow
from shared.db.models import IdempotencyRecord


def test_records_older_than_the_ttl_are_deleted_and_fresh_ones_kept(
    stack: Stack, db: sessionmaker[Session]
) -> None:
    owner = uuid.uuid4().hex
    ages = {"old": timedelta(hours=25), "fresh": timedelta(hours=23)}
    with db() as session:
        for key, age in ages.items():
            session.add(
                IdempotencyRecord(owner=owner, key=key, fingerprint="f", created_at=utcnow() - age)
            )
        session.commit()
    deadline = time.monotonic() + 15
    keys: set[str] = set(ages)
    while time.monotonic() < deadline:
        with db() as session:
            keys = set(
                session.scalars(
                    select(IdempotencyRecord.key).where(IdempotencyRecord.owner == owner)
                )
            )
        if keys == {"fresh"}:
            break
        time.sleep(0.2)
    assert keys == {"fresh"}
