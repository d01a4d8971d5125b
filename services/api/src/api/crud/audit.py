"""Audit log queries: newest first, keyset-paginated on (created_at, id)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.crud.jobs import decode_cursor, encode_cursor
from shared.db.models import AuditEvent, Tenant


async def list_events(
    *,
    session: AsyncSession,
    tenant: str | None,
    tenant_id: uuid.UUID | None = None,
    action: str | None,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    until: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[tuple[AuditEvent, str | None]], str | None]:
    """Events with their tenant's name; `action` ending in `.*` matches a prefix.

    `tenant_id` restricts to one tenant (a tenant admin's view); None: every tenant.
    """
    query = (
        select(AuditEvent, Tenant.name)
        .outerjoin(Tenant, Tenant.id == AuditEvent.tenant_id)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(limit + 1)
    )
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    if tenant_id is not None:
        query = query.where(AuditEvent.tenant_id == tenant_id)
    if action is not None:
        if action.endswith(".*"):
            query = query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
        else:
            query = query.where(AuditEvent.action == action)
    if resource_type is not None:
        query = query.where(AuditEvent.resource_type == resource_type)
    if resource_id is not None:
        query = query.where(AuditEvent.resource_id == resource_id)
    if since is not None:
        query = query.where(AuditEvent.created_at >= since)
    if until is not None:
        query = query.where(AuditEvent.created_at < until)
    if cursor:
        at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(
                AuditEvent.created_at < at,
                and_(AuditEvent.created_at == at, AuditEvent.id < last_id),
            )
        )
    rows: list[tuple[AuditEvent, str | None]] = [
        (event, name) for event, name in (await session.execute(query)).all()
    ]
    next_cursor = encode_cursor(rows[limit - 1][0]) if len(rows) > limit else None
    return rows[:limit], next_cursor
