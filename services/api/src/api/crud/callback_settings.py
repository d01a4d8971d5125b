"""Tenant callback settings rows (shared.callbacks.tenants); helpers never commit."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.callbacks.tenants import TenantCallbackSettings


async def get_settings(
    *, session: AsyncSession, tenant_id: uuid.UUID
) -> TenantCallbackSettings | None:
    return await session.get(TenantCallbackSettings, tenant_id)


async def allowed_hosts(*, session: AsyncSession, tenant_id: uuid.UUID) -> list[str] | None:
    """The tenant's own callback allow-list, or None when it has none."""
    row = await get_settings(session=session, tenant_id=tenant_id)
    return row.allowed_hosts if row is not None else None


async def rotate(
    *, session: AsyncSession, tenant_id: uuid.UUID, previous_valid_until: datetime | None
) -> TenantCallbackSettings:
    """Next secret generation, atomically (two concurrent rotations get two generations)."""
    table = TenantCallbackSettings
    statement = insert(table).values(
        tenant_id=tenant_id, secret_generation=1, previous_valid_until=previous_valid_until
    )
    statement = statement.on_conflict_do_update(
        index_elements=[table.tenant_id],
        set_={
            "secret_generation": table.secret_generation + 1,
            "previous_valid_until": previous_valid_until,
            "updated_at": func.now(),
        },
    )
    await session.execute(statement)
    row = await session.get(TenantCallbackSettings, tenant_id, populate_existing=True)
    assert row is not None
    return row


async def set_allowed_hosts(
    *, session: AsyncSession, tenant_id: uuid.UUID, hosts: list[str] | None
) -> TenantCallbackSettings:
    table = TenantCallbackSettings
    statement = insert(table).values(tenant_id=tenant_id, allowed_hosts=hosts)
    statement = statement.on_conflict_do_update(
        index_elements=[table.tenant_id],
        set_={"allowed_hosts": statement.excluded.allowed_hosts, "updated_at": func.now()},
    )
    await session.execute(statement)
    row = await session.get(TenantCallbackSettings, tenant_id, populate_existing=True)
    assert row is not None
    return row
