"""Create, list and revoke API keys.

Command line, wherever DATABASE_URL is set (containers included):
``python -m shared.apikeys create --tenant NAME --name WHAT [--scopes ...]``, ``list``,
``revoke PREFIX``. `medimg keys` is the same with the embedded default's database.
Creation and revocation are audited (``api_key.create``, ``api_key.revoke``); a revocation
notifies every API process (REVOKED_CHANNEL), which drops the key from its cache at once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from shared.audit import record_sync
from shared.auth import ALL_SCOPES, Scope, generate_key
from shared.config import get_settings
from shared.db.base import utcnow
from shared.db.models import ApiKey, Tenant
from shared.db.session import make_engine, make_sessionmaker
from shared.errors import AppError, InvalidRequest, NotFound

REVOKED_CHANNEL = "medimg_api_key_revoked"  # NOTIFY payload: the revoked key's prefix
_DURATION = re.compile(r"^(\d{1,5})([dhm])$")
_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def parse_duration(value: str) -> timedelta:
    """``90d``, ``12h`` or ``30m`` as a timedelta.

    Raises:
        InvalidRequest: anything else, or zero.
    """
    match = _DURATION.match(value.strip())
    if not match or int(match.group(1)) == 0:
        raise InvalidRequest(f"expiry {value!r}: give a positive duration such as 90d, 12h, 30m")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def get_or_create_tenant(session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_key(
    session: Session,
    *,
    tenant: str,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored.

    `expires_at` (None: never) is enforced by the API on every request.

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
        expires_at=expires_at,
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
        # Delivered on commit: API processes stop accepting the key from their cache.
        session.execute(text("SELECT pg_notify(:channel, :prefix)"),
                        {"channel": REVOKED_CHANNEL, "prefix": key.prefix})  # fmt: skip
    return key


def any_key_exists(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(ApiKey)))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--tenant", required=True, help="tenant name (created if new)")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'pacs-bridge'")
    create.add_argument(
        "--scopes",
        default=f"{Scope.JOBS_WRITE},{Scope.JOBS_READ}",
        help="comma-separated: " + ", ".join(s.value for s in Scope),
    )
    create.add_argument("--rate-limit", type=int, help="requests per minute for this key")
    create.add_argument(
        "--expires-in", help="the key stops working after this long: 90d, 12h, 30m (default never)"
    )
    create.add_argument(
        "--platform-operator",
        action="store_true",
        help=f"add the `{Scope.PLATFORM_ADMIN}` scope: every tenant's audit log, shared "
        "models, whole-tenant deletion (a tenant's `admin` has none of these)",
    )
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")


def run(args: argparse.Namespace, database_url: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            _run(session, args)
    except AppError as exc:
        print(f"keys: {exc.detail}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _run(session: Session, args: argparse.Namespace) -> None:
    if args.action == "create":
        scopes = args.scopes.split(",")
        if getattr(args, "platform_operator", False):
            scopes.append(Scope.PLATFORM_ADMIN.value)
        expires_in = getattr(args, "expires_in", None)
        expires_at = utcnow() + parse_duration(expires_in) if expires_in else None
        key, plaintext = create_key(
            session, tenant=args.tenant, name=args.name, scopes=scopes, expires_at=expires_at
        )
        key.rate_limit_per_minute = args.rate_limit
        record_sync(
            session,
            action="api_key.create",
            resource_type="api_key",
            resource_id=key.prefix,
            tenant_id=key.tenant_id,
            detail={
                "scopes": key.scopes,
                "expires_at": expires_at and expires_at.isoformat(),
                "by": "command line",
            },
        )
        if Scope.PLATFORM_ADMIN in key.scopes:  # a role change: on the audit hash chain
            record_sync(
                session,
                action="role.grant",
                resource_type="api_key",
                resource_id=key.prefix,
                tenant_id=key.tenant_id,
                detail={"scope": Scope.PLATFORM_ADMIN.value, "by": "command line"},
            )
        session.commit()
        until = f", expires {expires_at:%Y-%m-%d %H:%M} UTC" if expires_at else ""
        scopes_text = ", ".join(key.scopes)
        print(f"created key {key.prefix} for tenant {args.tenant!r} ({scopes_text}{until})")
        print(f"API key (shown once, store it now): {plaintext}")
    elif args.action == "list":
        print(f"{'prefix':<10} {'tenant':<20} {'name':<24} {'scopes':<32} status")
        for key in list_keys(session):
            status = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            if not key.revoked_at and key.expires_at:
                expired = key.expires_at <= utcnow()
                status = f"{'expired' if expired else 'expires'} {key.expires_at:%Y-%m-%d}"
            print(f"{key.prefix:<10} {key.tenant.name:<20} {key.name:<24} "
                  f"{','.join(key.scopes):<32} {status}")  # fmt: skip
    else:
        key = revoke_key(session, args.prefix)
        record_sync(
            session,
            action="api_key.revoke",
            resource_type="api_key",
            resource_id=key.prefix,
            tenant_id=key.tenant_id,
            detail={"by": "command line"},
        )
        session.commit()
        print(f"revoked key {key.prefix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.apikeys", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), get_settings().require_database_url())


if __name__ == "__main__":
    sys.exit(main())
