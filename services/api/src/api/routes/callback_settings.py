"""`/v1/tenant/callbacks`: a tenant admin's callback secret (rotate) and host allow-list."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Response, status

from api import audit
from api.auth import Admin
from api.crud import callback_settings as crud
from api.deps import SessionDep, SettingsDep
from shared.callbacks.tenants import (
    TenantCallbackSettings,
    derive_secret,
    normalize_allowed_hosts,
)
from shared.db.base import utcnow
from shared.errors import Conflict
from shared.schemas.callbacks import (
    CallbackAllowedHostsUpdate,
    CallbackSecretPublic,
    CallbackSecretRotate,
    CallbackSettingsPublic,
)

router = APIRouter(prefix="/tenant/callbacks", tags=["callbacks"])


def _public(row: TenantCallbackSettings | None) -> CallbackSettingsPublic:
    if row is None:
        return CallbackSettingsPublic(
            secret_generation=0, previous_valid_until=None, allowed_hosts=None
        )
    return CallbackSettingsPublic(
        secret_generation=row.secret_generation,
        previous_valid_until=row.previous_valid_until,
        allowed_hosts=row.allowed_hosts,
    )


@router.get("", response_model=CallbackSettingsPublic, responses={401: {}, 403: {}})
async def read_callback_settings(principal: Admin, session: SessionDep) -> CallbackSettingsPublic:
    """The caller's tenant's callback settings (never a secret)."""
    return _public(await crud.get_settings(session=session, tenant_id=principal.tenant_id))


@router.post(
    "/secret/rotate",
    status_code=status.HTTP_201_CREATED,
    response_model=CallbackSecretPublic,
    responses={401: {}, 403: {}, 409: {}, 422: {}},
)
async def rotate_callback_secret(
    body: CallbackSecretRotate,
    principal: Admin,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> CallbackSecretPublic:
    """A new signing secret for the tenant, returned once; the previous one keeps signing too
    for `previous_valid_seconds`."""
    if settings.callback_secret is None:
        raise Conflict("callbacks are disabled on this server (no MEDIMG_CALLBACK_SECRET)")
    until = utcnow() + timedelta(seconds=body.previous_valid_seconds)
    row = await crud.rotate(
        session=session,
        tenant_id=principal.tenant_id,
        previous_valid_until=until if body.previous_valid_seconds else None,
    )
    await audit.record(
        session,
        principal,
        "callback.secret.rotate",
        "tenant",
        str(principal.tenant_id),
        {
            "generation": row.secret_generation,
            "previous_valid_seconds": body.previous_valid_seconds,
        },
    )
    await session.commit()
    secret = derive_secret(
        settings.callback_secret.get_secret_value(), principal.tenant_id, row.secret_generation
    )
    response.headers["Cache-Control"] = "no-store"
    return CallbackSecretPublic(**_public(row).model_dump(), secret=secret)


@router.put(
    "/allowed-hosts",
    response_model=CallbackSettingsPublic,
    responses={401: {}, 403: {}, 422: {}},
)
async def update_callback_allowed_hosts(
    body: CallbackAllowedHostsUpdate, principal: Admin, session: SessionDep
) -> CallbackSettingsPublic:
    """Set the tenant's callback host allow-list (it narrows the server's); null removes it."""
    hosts = None if body.allowed_hosts is None else normalize_allowed_hosts(body.allowed_hosts)
    row = await crud.set_allowed_hosts(session=session, tenant_id=principal.tenant_id, hosts=hosts)
    await audit.record(
        session,
        principal,
        "callback.allowed_hosts.update",
        "tenant",
        str(principal.tenant_id),
        {"allowed_hosts": hosts},
    )
    await session.commit()
    return _public(row)
