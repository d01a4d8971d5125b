"""`medimg keys create|list|revoke`: `python -m shared.apikeys` on the embedded database."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli import embedded
from shared import apikeys
from shared.config import psycopg_url


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    keys.add_argument("--data-dir", default="var", help="embedded data folder (default: var)")
    apikeys.add_arguments(keys)
    keys.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """DATABASE_URL if set, else the embedded server of `medimg run` (started if needed)."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return apikeys.run(args, psycopg_url(url))
    server, url = embedded.start_postgres(Path(args.data_dir) / "postgres")
    try:
        return apikeys.run(args, psycopg_url(url))
    finally:
        server.cleanup()  # stops it only if `medimg run` is not using it
