"""Create, list and revoke API keys.

Command line, wherever DATABASE_URL is set (containers included):
``python -m shared.apikeys create --tenant NAME --name WHAT [--scopes ...]``, ``list``,
``revoke PREFIX``. `medimg keys` is the same with the embedded default's database.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.audit import record_sync
from shared.auth import ALL_SCOPES, Scope, generate_key
from shared.config import get_settings
from shared.db.base import utcnow
from shared.db.models import ApiKey, Tenant
from shared.db.session import make_engine, make_sessionmaker
from shared.errors import AppError, InvalidRequest, NotFound


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
        key, plaintext = create_key(session, tenant=args.tenant, name=args.name, scopes=scopes)
        key.rate_limit_per_minute = args.rate_limit
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
        print(f"created key {key.prefix} for tenant {args.tenant!r} ({', '.join(key.scopes)})")
        print(f"API key (shown once, store it now): {plaintext}")
    elif args.action == "list":
        print(f"{'prefix':<10} {'tenant':<20} {'name':<24} {'scopes':<32} status")
        for key in list_keys(session):
            status = f"revoked {key.revoked_at:%Y-%m-%d}" if key.revoked_at else "active"
            print(f"{key.prefix:<10} {key.tenant.name:<20} {key.name:<24} "
                  f"{','.join(key.scopes):<32} {status}")  # fmt: skip
    else:
        key = revoke_key(session, args.prefix)
        session.commit()
        print(f"revoked key {key.prefix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.apikeys", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv), get_settings().require_database_url())


if __name__ == "__main__":
    sys.exit(main())
