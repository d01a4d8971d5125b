"""`GET /v1/me`: the calling key's name, tenant, scopes and expiry (for UIs and scripts)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from sqlalchemy import select

from api.auth import Principal, authenticate
from api.deps import SessionDep
from shared.auth import Scope, has_scope
from shared.db.models import ApiKey, Tenant
from shared.schemas.me import MePublic

router = APIRouter(tags=["auth"])


@router.get("/me", response_model=MePublic, responses={401: {}})
async def read_me(
    principal: Annotated[Principal, Depends(authenticate)], session: SessionDep
) -> MePublic:
    """The calling API key: its name, tenant, scopes and expiry; never its secret."""
    key, tenant = (
        await session.execute(
            select(ApiKey, Tenant)
            .join(Tenant, Tenant.id == ApiKey.tenant_id)
            .where(ApiKey.id == principal.key_id)
        )
    ).one()
    return MePublic(
        key_name=key.name,
        key_prefix=key.prefix,
        tenant_id=tenant.id,
        tenant=tenant.name,
        scopes=sorted(key.scopes),
        effective_scopes=[s.value for s in Scope if has_scope(principal.scopes, s)],
        rate_limit_per_minute=key.rate_limit_per_minute,
        created_at=key.created_at,
        # Key expiry is optional in the schema; report it once keys carry one.
        expires_at=getattr(key, "expires_at", None),
    )
