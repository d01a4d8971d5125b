"""A tenant's settings: its retention period (tenant admins) and quotas (platform operator)."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from api import audit
from api.auth import Admin, PlatformOperator, Principal
from api.deps import SessionDep, SettingsDep
from shared.config import Settings
from shared.db.models import Tenant
from shared.errors import NotFound
from shared.job_quota import limits
from shared.schemas.deletion import TenantPublic, TenantQuotaUpdate, TenantUpdate

router = APIRouter(tags=["tenants"])


def _public(tenant: Tenant, settings: Settings) -> TenantPublic:
    max_jobs, max_stat = limits(tenant, settings)
    return TenantPublic(
        id=tenant.id,
        name=tenant.name,
        retention_days=tenant.retention_days,
        max_active_jobs=max_jobs,
        max_active_stat_jobs=max_stat,
    )


@router.get("/tenant", response_model=TenantPublic, responses={401: {}, 403: {}})
async def read_tenant(principal: Admin, session: SessionDep, settings: SettingsDep) -> TenantPublic:
    """The caller's tenant: retention period and quotas in force."""
    tenant = await session.get_one(Tenant, principal.tenant_id)
    return _public(tenant, settings)


async def _update(
    session: SessionDep, principal: Principal, tenant_id: uuid.UUID, changes: dict[str, object]
) -> Tenant:
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    if tenant is None:
        raise NotFound(f"no tenant with id {tenant_id}")
    detail = {name: {"from": getattr(tenant, name), "to": value} for name, value in changes.items()}
    for name, value in changes.items():
        setattr(tenant, name, value)
    await audit.record(session, principal, "tenant.update", "tenant", str(tenant.id), detail)
    await session.commit()
    return tenant


@router.patch("/tenant", response_model=TenantPublic, responses={401: {}, 403: {}, 422: {}})
async def update_tenant(
    body: TenantUpdate, principal: Admin, session: SessionDep, settings: SettingsDep
) -> TenantPublic:
    """Set the retention period: housekeeping deletes final jobs older than it (null: never)."""
    tenant = await _update(
        session, principal, principal.tenant_id, {"retention_days": body.retention_days}
    )
    return _public(tenant, settings)


@router.patch(
    "/tenants/{tenant_id}/quotas",
    response_model=TenantPublic,
    responses={401: {}, 403: {}, 404: {}, 422: {}},
)
async def update_tenant_quotas(
    tenant_id: uuid.UUID,
    body: TenantQuotaUpdate,
    principal: PlatformOperator,
    session: SessionDep,
    settings: SettingsDep,
) -> TenantPublic:
    """Set a tenant's quotas (operator only; null: the server default, 0: unlimited)."""
    tenant = await _update(session, principal, tenant_id, body.model_dump())
    return _public(tenant, settings)
