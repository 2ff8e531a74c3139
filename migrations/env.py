"""Alembic environment for the service database: async engines, SQLite and PostgreSQL.

The database URL is taken, in order, from ``alembic -x url=...``, the ``DIC_DATABASE_URL``
environment variable, and ``sqlalchemy.url`` in ``alembic.ini``. When
:mod:`dic_connector.node.store.migrate` drives Alembic it passes an open connection in
``config.attributes["connection"]`` instead (Alembic cookbook, "Programmatic API use
(connection sharing) With Asyncio").

SQLite cannot ``ALTER`` most things, so migrations run in batch mode there
(``render_as_batch``: https://alembic.sqlalchemy.org/en/latest/batch.html), inside one
transaction, with foreign-key enforcement off while tables are recreated and a
``PRAGMA foreign_key_check`` before commit instead.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

import dic_connector.node.store.models  # noqa: F401  (defines the tables on Base.metadata)
from dic_connector.node.store.base import Base
from dic_connector.node.store.engine import create_engine, normalise_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    url = x_url or os.environ.get("DIC_DATABASE_URL") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("No database URL: pass -x url=... or set DIC_DATABASE_URL")
    return normalise_url(url).render_as_string(hide_password=False)


def _run_with(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=sqlite,
        transactional_ddl=True,  # SQLite too: a failed migration rolls back entirely
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                tables = sorted({row[0] for row in broken})
                raise RuntimeError(f"foreign keys broken after migration in: {tables}")


def run_migrations_offline() -> None:
    """Emit SQL to stdout (``alembic upgrade head --sql``)."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = create_engine(_url(), poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_with)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    shared = config.attributes.get("connection")
    if shared is not None:
        _run_with(shared)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_async())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
