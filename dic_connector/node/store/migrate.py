"""Run the Alembic migrations in ``migrations/`` from Python (tests, CLI, the Helm Job).

Alembic's commands are synchronous and ``migrations/env.py`` would start its own event loop,
which cannot nest in a running one. These helpers open an async connection themselves and
hand it to ``env.py`` through ``config.attributes["connection"]`` (Alembic cookbook,
"Programmatic API use (connection sharing) With Asyncio"), so they are plain coroutines.

:func:`schema_diff` compares the live schema with the models' metadata
(``alembic.autogenerate.compare_metadata``); an empty list means the database is exactly what
the code expects, which is what a readiness probe wants to know.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from dic_connector.errors import StoreError
from dic_connector.node.store.base import Base
from dic_connector.node.store.engine import create_engine
from dic_connector.node.store.models import AuditEntry as _AuditEntry  # noqa: F401 (registers tables)

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"


def alembic_config() -> Config:
    """An Alembic config pointing at ``migrations/`` without reading ``alembic.ini``."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise StoreError(f"Alembic migrations not found at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


async def _with_connection(url: str | URL, action: Callable[[Connection], T]) -> T:
    engine = create_engine(url, poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(action)
    finally:
        await engine.dispose()


def _command(name: str, revision: str) -> Callable[[Connection], None]:
    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        getattr(command, name)(config, revision)

    return run


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    await _with_connection(url, _command("upgrade", revision))


async def downgrade(url: str | URL, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (default: empty)."""
    await _with_connection(url, _command("downgrade", revision))


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at (``None`` for an empty database)."""
    return await _with_connection(
        url, lambda conn: MigrationContext.configure(conn).get_current_revision()
    )


async def schema_diff(url: str | URL) -> list[Any]:
    """Differences between the live schema and the models (empty when they agree)."""

    def diff(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, Base.metadata))

    return await _with_connection(url, diff)
