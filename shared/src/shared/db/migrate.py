"""Apply Alembic migrations and register bundled models: the one-shot `migrate` step.

Usage: ``python -m shared.db.migrate [upgrade|check|revision -m MSG]``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from shared.config import get_settings
from shared.db.session import make_engine, make_sessionmaker
from shared.registry import register_bundled
from shared.storage import BlobStore

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(year)d-%%(month).2d-%%(day).2d_%%(rev)s")
    cfg.attributes["url"] = url
    return cfg


def head_revisions() -> frozenset[str]:
    """Every head of the migration graph (branches may be open until a merge revision)."""
    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())


def current_revisions(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def upgrade(url: str, *, register_models: bool = True) -> None:
    settings = get_settings()
    command.upgrade(alembic_config(url), "heads")
    if not register_models:
        return
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            versions = register_bundled(
                session, BlobStore(settings.store_path), settings.bundled_models_dir
            )
            session.commit()
            for v in versions:
                log.info("model %s:%d ready (%s)", v.model.name, v.version, v.architecture)
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.db.migrate")
    parser.add_argument("action", choices=["upgrade", "check", "revision"], default="upgrade")
    parser.add_argument("-m", "--message", default="change")
    parser.add_argument("--no-bundled-models", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = get_settings().require_database_url()
    if args.action == "upgrade":
        upgrade(url, register_models=not args.no_bundled_models)
    elif args.action == "check":
        command.check(alembic_config(url))
    else:
        command.revision(alembic_config(url), message=args.message, autogenerate=True)


if __name__ == "__main__":
    main()
