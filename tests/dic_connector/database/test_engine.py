"""Engine options per backend: URLs get their async driver, SQLite its pragmas, PostgreSQL UTC."""

from __future__ import annotations

import os
import stat
from pathlib import Path

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


async def test_sqlite_files_are_private(tmp_path: Path) -> None:
    """Created 0600 whatever the umask; an existing file and its WAL lose group/world bits."""
    fresh, old = tmp_path / "fresh.db", tmp_path / "old.db"
    old.touch()
    old.chmod(0o644)
    previous = os.umask(0o022)
    try:
        for path in (fresh, old):
            engine = create_engine(f"sqlite:///{path}")
            try:
                async with engine.begin() as conn:
                    await conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                    await conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                companions = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
                for file in (path, *companions):
                    assert file.exists() and stat.S_IMODE(file.stat().st_mode) == 0o600, file
            finally:
                await engine.dispose()
    finally:
        os.umask(previous)
