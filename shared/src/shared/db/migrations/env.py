from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from shared.db import models  # noqa: F401  (registers tables on Base.metadata)
from shared.db.base import Base

config = context.config


def run_migrations_online() -> None:
    engine = create_engine(config.attributes["url"], poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
