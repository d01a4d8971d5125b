"""Create, list and revoke API keys (used by `medimg keys` and the first-run bootstrap)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.auth import ALL_SCOPES, Scope, generate_key
from shared.db.base import utcnow
from shared.db.models import ApiKey, Tenant
from shared.errors import InvalidRequest, NotFound


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session, *, tenant: str, name: str, scopes: Iterable[str]
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored.

    Raises:
        InvalidRequest: an unknown scope was asked for.
    """
    wanted = sorted(set(scopes))
    unknown = set(wanted) - {s.value for s in ALL_SCOPES}
    if unknown or not wanted:
        raise InvalidRequest(
            f"unknown or missing scopes {sorted(unknown)}; choose from "
            + ", ".join(s.value for s in Scope)
        )
    new = generate_key()
    key = ApiKey(
        tenant=get_or_create_tenant(session, tenant),
        name=name,
        prefix=new.prefix,
        key_hash=new.digest,
        scopes=wanted,
    )
    session.add(key)
    session.flush()
    return key, new.plaintext


def list_keys(session: Session) -> list[ApiKey]:
    return list(
        session.scalars(select(ApiKey).join(Tenant).order_by(Tenant.name, ApiKey.created_at))
    )


def revoke_key(session: Session, prefix: str) -> ApiKey:
    key = session.scalar(select(ApiKey).where(ApiKey.prefix == prefix))
    if key is None:
        raise NotFound(f"no API key with prefix {prefix!r}")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
    return key


def any_key_exists(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(ApiKey)))
