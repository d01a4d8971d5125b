"""`medimg keys create|list|revoke`: manage API keys directly in the database."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy.orm import Session

from cli import embedded
from shared.apikeys import create_key, list_keys, revoke_key
from shared.auth import Scope
from shared.config import psycopg_url
from shared.db.session import make_engine, make_sessionmaker
from shared.errors import AppError


@contextmanager
def database_session(data_dir: Path) -> Iterator[Session]:
    """DATABASE_URL if set, else the embedded server of `medimg run` (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    server = None
    if not url:
        server, url = embedded.start_postgres(data_dir / "postgres")
    engine = make_engine(psycopg_url(url))
    try:
        with make_sessionmaker(engine)() as session:
            yield session
    finally:
        engine.dispose()
        if server is not None:
            server.cleanup()  # stops it only if `medimg run` is not using it


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("--data-dir", default="var", help="embedded data folder (default: var)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--tenant", required=True, help="tenant name (created if new)")
    create.add_argument("--name", required=True, help="what the key is for, e.g. 'pacs-bridge'")
    create.add_argument(
        "--scopes",
        default=f"{Scope.JOBS_WRITE},{Scope.JOBS_READ}",
        help="comma-separated: " + ", ".join(s.value for s in Scope),
    )
    create.add_argument("--rate-limit", type=int, help="requests per minute for this key")
    actions.add_parser("list", help="list keys (never their secrets)")
    revoke = actions.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix")
    keys.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        with database_session(Path(args.data_dir)) as session:
            if args.action == "create":
                key, plaintext = create_key(
                    session, tenant=args.tenant, name=args.name, scopes=args.scopes.split(",")
                )
                key.rate_limit_per_minute = args.rate_limit
                session.commit()
                print(
                    f"created key {key.prefix} for tenant {args.tenant!r} ({', '.join(key.scopes)})"
                )
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
    except AppError as exc:
        print(f"medimg keys: {exc.detail}")
        return 2
    return 0
