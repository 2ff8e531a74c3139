"""An Alembic environment driven from Python, and the ``env.py`` every environment runs.

The project owns two schemas with separate histories: the node's service database
(``migrations/``, version table ``alembic_version``) and the connector's state database
(``migrations/connector/``, version table ``connector_alembic_version``). A
:class:`Migrations` names one of them by its script directory, its models' metadata and its
version table; the distinct version tables and the table filter of :func:`own_tables` let both
live in one PostgreSQL database without either seeing the other's tables.

Alembic's commands are synchronous and an ``env.py`` would start its own event loop, which
cannot nest in a running one. :class:`Migrations` therefore opens an async connection itself
and hands it to ``env.py`` through ``config.attributes["connection"]`` (Alembic cookbook,
"Programmatic API use (connection sharing) With Asyncio"), so its methods are plain
coroutines. :func:`run_environment` is the whole of an ``env.py``: from the ``alembic``
command line it takes the URL from ``-x url=...``, an environment variable or
``sqlalchemy.url`` and opens its own engine.

SQLite cannot ``ALTER`` most things, so migrations run in batch mode there
(``render_as_batch``: https://alembic.sqlalchemy.org/en/latest/batch.html), inside one
transaction, with foreign-key enforcement off while tables are recreated and a
``PRAGMA foreign_key_check`` before commit instead.

:meth:`Migrations.schema_diff` compares the live schema with the metadata
(``alembic.autogenerate.compare_metadata``); an empty list means the database is exactly what
the code expects, which is what a readiness probe wants to know. :func:`describe` renders one
difference by the names of what differs (never a default value or a row).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import dataclass
from logging.config import fileConfig
from pathlib import Path
from typing import Any, TypeVar

from alembic import command, context
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData
from sqlalchemy.engine import URL, Connection
from sqlalchemy.pool import NullPool

from dic_connector.database.engine import create_engine, normalise_url
from dic_connector.errors import StoreError

T = TypeVar("T")

#: The signature of Alembic's ``include_name`` hook: (name, type, parent names) -> include?
NameFilter = Callable[[str | None, str, dict[str, str | None]], bool]


def own_tables(metadata: MetaData) -> NameFilter:
    """An ``include_name`` hook that lets autogenerate see only ``metadata``'s tables.

    Without it, comparing one schema against a database that also holds the other's tables
    (or version table) would propose dropping them.
    """
    names = {table.name for table in metadata.tables.values()}

    def include(name: str | None, type_: str, _parents: dict[str, str | None]) -> bool:
        return type_ != "table" or name in names

    return include


@dataclass(frozen=True)
class Migrations:
    """One Alembic environment: where its scripts are, what its models are, its version table.

    ``version_table`` must be the one the environment's ``env.py`` passes to
    :func:`run_environment`.
    """

    script_location: Path
    metadata: MetaData
    version_table: str = "alembic_version"

    def config(self) -> Config:
        """An Alembic config pointing at ``script_location`` without reading ``alembic.ini``."""
        if not (self.script_location / "env.py").is_file():
            raise StoreError(f"Alembic migrations not found at {self.script_location}")
        config = Config()
        config.set_main_option("script_location", str(self.script_location))
        return config

    def head_revision(self) -> str | None:
        """The newest revision in ``script_location/versions``."""
        return ScriptDirectory.from_config(self.config()).get_current_head()

    async def upgrade(self, url: str | URL, revision: str = "head") -> None:
        """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
        await _with_connection(url, self._command("upgrade", revision))

    async def downgrade(self, url: str | URL, revision: str = "base") -> None:
        """Migrate the database at ``url`` down to ``revision`` (default: empty)."""
        await _with_connection(url, self._command("downgrade", revision))

    async def current_revision(self, url: str | URL) -> str | None:
        """The revision the database at ``url`` is at (``None`` when never migrated)."""
        return await _with_connection(url, lambda conn: self._context(conn).get_current_revision())

    async def schema_diff(self, url: str | URL) -> list[Any]:
        """Differences between the live schema and the metadata (empty when they agree).

        Tables that are not the metadata's (the other schema's, other version tables) are
        ignored.
        """
        return await _with_connection(
            url, lambda conn: list(compare_metadata(self._context(conn), self.metadata))
        )

    def _context(self, connection: Connection) -> MigrationContext:
        return MigrationContext.configure(connection, opts={
            "version_table": self.version_table,
            "compare_type": True,
            "include_name": own_tables(self.metadata),
        })

    def _command(self, name: str, revision: str) -> Callable[[Connection], None]:
        def run(connection: Connection) -> None:
            config = self.config()
            config.attributes["connection"] = connection
            getattr(command, name)(config, revision)

        return run


async def _with_connection(url: str | URL, action: Callable[[Connection], T]) -> T:
    engine = create_engine(url, poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        async with engine.begin() as conn:
            return await conn.run_sync(action)
    finally:
        await engine.dispose()


def describe(difference: Any) -> str:
    """One entry of :meth:`Migrations.schema_diff` as text: the operation and what it names.

    ``("add_table", Table)`` -> ``"add_table runs"``; a column change (a list of
    ``("modify_type", schema, table, column, ...)`` tuples) -> ``"modify_type runs.status"``.
    """
    if isinstance(difference, list):
        return "; ".join(describe(part) for part in difference)
    operation, *rest = difference
    if operation.startswith("modify_"):
        return f"{operation} {rest[1]}.{rest[2]}"
    if operation in ("add_column", "remove_column"):
        return f"{operation} {rest[1]}.{rest[2].name}"
    target = rest[0]  # a Table, Index or constraint
    name = getattr(target, "name", None) or "unnamed"
    table = getattr(getattr(target, "table", None), "name", None)
    return f"{operation} {table}.{name}" if table and table != name else f"{operation} {name}"


def run_environment(metadata: MetaData, *, version_table: str, url_variable: str) -> None:
    """Everything an ``env.py`` does; call it from there (Alembic's ``context`` is live).

    Driven by :class:`Migrations`, it migrates the connection it is handed. From the
    ``alembic`` command line the URL is, in order, ``-x url=...``, the environment variable
    ``url_variable``, and ``sqlalchemy.url`` of the ``alembic.ini`` section.
    """
    configure: dict[str, Any] = {"target_metadata": metadata, "version_table": version_table,
                                 "include_name": own_tables(metadata), "compare_type": True}
    config = context.config
    if context.is_offline_mode():  # alembic upgrade head --sql
        url = _command_line_url(url_variable)
        context.configure(url=url, literal_binds=True, render_as_batch=url.startswith("sqlite"),
                          dialect_opts={"paramstyle": "named"}, **configure)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run_with(connection: Connection) -> None:
        sqlite = connection.dialect.name == "sqlite"
        context.configure(connection=connection, render_as_batch=sqlite,
                          transactional_ddl=True,  # SQLite too: a failure rolls back entirely
                          **configure)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    tables = sorted({row[0] for row in broken})
                    raise StoreError(f"foreign keys broken after migration in: {tables}")

    shared = config.attributes.get("connection")
    if shared is not None:
        run_with(shared)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)

    async def run_async() -> None:
        engine = create_engine(_command_line_url(url_variable), poolclass=NullPool,
                               sqlite_foreign_keys=False)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_with)
        finally:
            await engine.dispose()

    asyncio.run(run_async())


def _command_line_url(variable: str) -> str:
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    url = x_url or os.environ.get(variable) or context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise StoreError(f"No database URL: pass -x url=... or set {variable}")
    return normalise_url(url).render_as_string(hide_password=False)
