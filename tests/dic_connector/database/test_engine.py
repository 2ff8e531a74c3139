"""Engine options per backend: URLs get their async driver, SQLite its pragmas, PostgreSQL UTC."""

from __future__ import annotations

import pytest

from dic_connector.database.engine import create_engine, normalise_url
from dic_connector.errors import ConfigError


def test_urls_get_their_async_driver() -> None:
    assert normalise_url("postgresql://dic@127.0.0.1:5432/db").drivername == "postgresql+asyncpg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ConfigError, match="backend 'mysql'"):
        normalise_url("mysql://x/y")
    with pytest.raises(ConfigError, match="not a valid"):
        normalise_url("::nonsense::")


async def test_backend_settings(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                pragmas = {name: (await conn.exec_driver_sql(f"PRAGMA {name}")).scalar()
                           for name in ("journal_mode", "foreign_keys", "secure_delete",
                                        "busy_timeout")}
                assert pragmas == {"journal_mode": "wal", "foreign_keys": 1,
                                   "secure_delete": 1, "busy_timeout": 30_000}
            else:
                assert (await conn.exec_driver_sql("SHOW timezone")).scalar() == "UTC"
                assert engine.pool.size() == 10  # type: ignore[attr-defined]
    finally:
        await engine.dispose()


async def test_memory_sqlite_works_for_tests() -> None:
    engine = create_engine("sqlite://")
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT count(*) FROM t")).scalar() == 0
    finally:
        await engine.dispose()
