"""Fixtures for the storage tests: one migrated database per test, on SQLite and PostgreSQL.

``db_url`` is parametrised over both backends, so every test that asks for it (or for
``engine``/``sessions``) runs twice. The PostgreSQL database comes from the root conftest's
throwaway cluster (``fresh_postgres_db``), with its scheme switched to the asyncpg driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dic_connector.store import migrate
from dic_connector.store.crypto import NodeKeyring
from dic_connector.store.engine import create_engine, session_factory
from dic_connector.store.unit_of_work import Store


def asyncpg_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    dsn: str = request.getfixturevalue("fresh_postgres_db")
    return asyncpg_url(dsn)


@pytest.fixture
async def db_url(empty_db_url: str) -> str:
    """URL of a database migrated to head."""
    await migrate.upgrade(empty_db_url)
    return empty_db_url


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
