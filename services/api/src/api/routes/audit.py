"""The audit log, for admins: who did what to which job, model or dataset."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.auth import Admin
from api.crud import audit as crud
from api.deps import SessionDep
from shared.schemas.audit import AuditEventPublic, AuditEventsPublic

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=AuditEventsPublic, responses={401: {}, 403: {}, 422: {}})
async def read_audit_events(
    principal: Admin,
    session: SessionDep,
    tenant: Annotated[str | None, Query(description="Tenant name")] = None,
    action: Annotated[
        str | None, Query(description="Exact action (`job.read`) or a prefix (`job.*`)")
    ] = None,
    resource_type: Annotated[str | None, Query(description="`job`, `model`, ...")] = None,
    resource_id: str | None = None,
    since: Annotated[datetime | None, Query(description="Inclusive lower bound")] = None,
    until: Annotated[datetime | None, Query(description="Exclusive upper bound")] = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AuditEventsPublic:
    """Audit events, newest first: a tenant `admin` sees its own tenant's, an operator all."""
    rows, next_cursor = await crud.list_events(
        session=session,
        tenant=tenant,
        # A tenant admin's reads are pinned to its tenant whatever `tenant` asks for.
        tenant_id=None if principal.is_operator else principal.tenant_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
        cursor=cursor,
        limit=limit,
    )
    items = [
        AuditEventPublic(
            id=e.id,
            created_at=e.created_at,
            tenant=tenant_name,
            key_prefix=e.key_prefix,
            action=e.action,
            resource_type=e.resource_type,
            resource_id=e.resource_id,
            request_id=e.request_id,
            detail=e.detail,
        )
        for e, tenant_name in rows
    ]
    return AuditEventsPublic(items=items, next_cursor=next_cursor)
