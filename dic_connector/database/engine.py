"""Async engines for the two supported databases, with the options each one needs.

The node's service database and the connector's state database both open theirs here.

- **SQLite** (``sqlite+aiosqlite``, the embedded default): write-ahead logging so readers do
  not block the writer, foreign keys enforced (off by default in SQLite), a busy timeout,
  ``secure_delete`` so erased share blobs are overwritten on disk, and every writing
  transaction started with ``BEGIN IMMEDIATE``. The last point matters: SQLite's default
  deferred transactions upgrade from read to write lazily, and two writers that both read
  first then fail with ``database is locked`` instead of waiting; taking the write lock up
  front serialises writers (the audit chain relies on it). See
  https://www.sqlite.org/lang_transaction.html and the SQLAlchemy aiosqlite notes on
  "Serializable isolation / Savepoints / Transactional DDL". Statements run on the event
  loop's thread, except those that may wait for a lock (:mod:`.inline`; issue 17: a
  thread hand-off per call cost more than the call).
- **Read-only transactions** (a connection with the execution option :data:`READ_ONLY`):
  on SQLite a deferred ``BEGIN`` under ``PRAGMA query_only`` (a WAL reader takes no lock and
  never waits for the writer, https://www.sqlite.org/wal.html#concurrency; a write inside is
  refused by SQLite itself), on PostgreSQL ``BEGIN READ ONLY`` (asyncpg's ``readonly``
  transactions, SQLAlchemy's ``postgresql_readonly`` option). Status polls, listings and the
  coordination ticks read this way, so they no longer queue behind every writer.
- **PostgreSQL** (``postgresql+asyncpg``, production): bounded pool, pre-ping, recycle, and the
  session time zone pinned to UTC.

``postgresql://`` and ``sqlite://`` URLs are accepted and given their async driver.

A SQLite database file is created mode 0600 before SQLite opens it (and an existing one,
with its ``-wal``/``-shm``/``-journal`` companions, loses any group or world bits): SQLite
gives the companions the mode of the database file (``robust_open`` in ``os_unix.c``), and
the files hold share blobs, audit entries and token digests that no other local user may
read.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine
from sqlalchemy.pool import StaticPool

from dic_connector.config import database_url
from dic_connector.database.inline import inline_connector

SQLITE_BUSY_TIMEOUT_MS = 30_000
PG_POOL_SIZE = 10
PG_MAX_OVERFLOW = 10
PG_POOL_RECYCLE_S = 1_800
PG_COMMAND_TIMEOUT_S = 60
#: The connection execution option that makes its transactions read-only (see above).
READ_ONLY = "dic_read_only"


def read_only_options(engine: AsyncEngine) -> dict[str, Any]:
    """Execution options that make a connection's transactions on ``engine`` read-only."""
    if engine.dialect.name == "postgresql":
        return {READ_ONLY: True, "postgresql_readonly": True}
    return {READ_ONLY: True}


def normalise_url(url: str | URL) -> URL:
    """The URL with its async driver: ``postgresql`` -> asyncpg, ``sqlite`` -> aiosqlite."""
    return database_url(url)


def _is_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or "mode=memory" in str(url)


SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def private_sqlite_file(url: URL) -> None:
    """Create the database file of ``url`` mode 0600, or take group and world bits off it
    and its companions; nothing for in-memory databases and ``file:`` URIs."""
    if _is_memory(url) or url.database is None or url.database.startswith("file:"):
        return
    path = Path(url.database)
    with contextlib.suppress(FileExistsError, FileNotFoundError):  # no directory: SQLite says
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in SQLITE_COMPANIONS)):
        with contextlib.suppress(OSError):  # absent, or not ours to change
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)


def _install_sqlite_hooks(engine: AsyncEngine, memory: bool, foreign_keys: bool) -> None:
    sync_engine = engine.sync_engine
    url = engine.url

    @event.listens_for(sync_engine, "do_connect")
    def _before_connect(*_args: Any) -> None:
        # on the first connection, not at construction (creating an engine does no I/O)
        private_sqlite_file(url)

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves, see below
        cursor = dbapi_conn.cursor()
        if not memory:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA foreign_keys={'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # query_only is a property of the pooled DBAPI connection, which remembers (in its
        # pool record's info) what it was last set to: a statement only when it changes
        read_only = bool(conn.get_execution_options().get(READ_ONLY, False))
        info = conn.connection.info
        if info.get(READ_ONLY) is not read_only:
            conn.exec_driver_sql(f"PRAGMA query_only={'ON' if read_only else 'OFF'}")
            info[READ_ONLY] = read_only
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def create_engine(url: str | URL, *, echo: bool = False, sqlite_foreign_keys: bool = True,
                  sqlite_inline: bool = True, **overrides: Any) -> AsyncEngine:
    """An :class:`AsyncEngine` for ``url`` with the options above; ``overrides`` win.

    ``sqlite_foreign_keys=False`` is for migrations only: SQLite batch mode recreates tables,
    and dropping a referenced table with enforcement on fails or cascades
    (https://www.sqlite.org/foreignkeys.html#fk_schemacommands); the migration environment
    runs ``PRAGMA foreign_key_check`` afterwards instead. ``sqlite_inline=False`` runs every
    SQLite call on aiosqlite's worker thread, as the plain dialect does (:mod:`.inline`).
    """
    parsed = normalise_url(url)
    options: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        memory = _is_memory(parsed)
        if memory:
            options["poolclass"] = StaticPool
        if sqlite_inline:
            options["async_creator"] = inline_connector(
                parsed, before_connect=lambda: private_sqlite_file(parsed))
        options.update(overrides)
        engine = _create_async_engine(parsed, **options)
        _install_sqlite_hooks(engine, memory, sqlite_foreign_keys)
        return engine
    options["connect_args"] = {
        "command_timeout": PG_COMMAND_TIMEOUT_S,
        "server_settings": {"application_name": "dic-connector", "timezone": "UTC"},
    }
    if "poolclass" not in overrides:  # sizes only make sense for the default QueuePool
        options.update(pool_size=PG_POOL_SIZE, max_overflow=PG_MAX_OVERFLOW,
                       pool_pre_ping=True, pool_recycle=PG_POOL_RECYCLE_S)
    options.update(overrides)
    return _create_async_engine(parsed, **options)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions that keep loaded objects usable after commit (``expire_on_commit=False``)."""
    return async_sessionmaker(engine, expire_on_commit=False)
