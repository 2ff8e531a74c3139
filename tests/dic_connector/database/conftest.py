"""Fixtures for the shared database layer: an empty database on SQLite and on PostgreSQL.

``backend`` is parametrised over both databases, so every test that asks for
``empty_db_url`` runs twice; the PostgreSQL one is a fresh database of the root conftest's
throwaway cluster (``fresh_postgres_db``).
"""

from __future__ import annotations

from pathlib import Path

import pytest


def asyncpg_url(dsn: str) -> str:
    return dsn.replace("postgresql://", "postgresql+asyncpg://", 1)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database on the parametrised backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    return asyncpg_url(request.getfixturevalue("fresh_postgres_db"))
