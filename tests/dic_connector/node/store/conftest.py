"""Fixtures for the storage tests: one migrated database per test, on SQLite and PostgreSQL.

``backend`` is parametrised over both databases, so every test that asks for ``db_url`` (or
``engine``, ``sessions``, ``store``) runs twice. PostgreSQL databases live in the root
conftest's throwaway cluster: ``empty_db_url`` is a fresh empty one (``fresh_postgres_db``);
``db_url`` is one database migrated once per session and emptied (``TRUNCATE``) before each
test, which keeps the suite fast without skipping the real migrations. Tests that change the
schema itself must use ``empty_db_url``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import dic_connector.node.store.models  # noqa: F401  (defines the tables on Base.metadata)
from dic_connector.database.engine import create_engine, session_factory
from dic_connector.node.store import migrate
from dic_connector.node.store.base import Base
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring
from tests.conftest import migrated_sqlite

T = TypeVar("T")


def asyncpg_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on its own loop in a worker thread (sync fixtures; no loop clash)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_migrated(postgres_dsn: str) -> Iterator[str]:
    """DSN of a database in the session cluster migrated to head (shared by the session)."""
    name = f"store_{uuid.uuid4().hex[:8]}"
    dsn = postgres_dsn.rsplit("/", 1)[0] + f"/{name}"
    run_sync(_admin(postgres_dsn, f'CREATE DATABASE "{name}"'))
    run_sync(migrate.upgrade(asyncpg_url(dsn)))
    yield dsn
    run_sync(_admin(postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on the parametrised backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    return asyncpg_url(request.getfixturevalue("fresh_postgres_db"))


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database migrated to head."""
    if backend == "sqlite":
        yield run_sync(migrated_sqlite(tmp_path / "node.db"))
        return
    dsn: str = request.getfixturevalue("pg_migrated")
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    run_sync(_admin(dsn, f"TRUNCATE {tables} CASCADE"))
    yield asyncpg_url(dsn)


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


@pytest.fixture
def keyring() -> NodeKeyring:
    return NodeKeyring.generate("node-0")


@pytest.fixture
def store(engine: AsyncEngine, keyring: NodeKeyring) -> Store:
    """The node's store on the migrated database (not closed here: ``engine`` is)."""
    return Store(engine, keyring)
