"""Fixtures for the state store: an empty and a migrated state database, SQLite and PostgreSQL.

``backend`` is parametrised over both databases, so every test that asks for ``state_url`` or
``state`` runs twice; the PostgreSQL database is a fresh one of the root conftest's throwaway
cluster (``fresh_postgres_db``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dic_connector.connector.state.store import StateStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def state_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on the parametrised backend, as an operator writes it."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'connector-state.db'}"
    return str(request.getfixturevalue("fresh_postgres_db"))


@pytest.fixture
async def state(state_url: str) -> AsyncIterator[StateStore]:
    """A state store on a database migrated to head."""
    store = StateStore(state_url)
    await store.migrate()
    yield store
    await store.close()
