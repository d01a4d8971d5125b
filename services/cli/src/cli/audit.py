"""`medimg audit verify`: `python -m shared.audit_chain verify` on the embedded database."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli import embedded
from shared import audit_chain
from shared.config import psycopg_url


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    audit = sub.add_parser("audit", help="verify the audit log's hash chain")
    audit.add_argument("--data-dir", default="var", help="embedded data folder (default: var)")
    audit_chain.add_arguments(audit)
    audit.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """DATABASE_URL if set, else the embedded server of `medimg run` (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return audit_chain.run(psycopg_url(url))
    server, url = embedded.start_postgres(Path(args.data_dir) / "postgres")
    try:
        return audit_chain.run(psycopg_url(url))
    finally:
        server.cleanup()
