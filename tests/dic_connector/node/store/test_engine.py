"""Engine options per backend, and the unit of work's commit/rollback."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from dic_connector.errors import ConfigError
from dic_connector.node.store.engine import create_engine, normalise_url
from dic_connector.node.store.unit_of_work import Store


def test_urls_get_their_async_driver() -> None:
    assert normalise_url("postgresql://dic@127.0.0.1:5432/db").drivername == "postgresql+asyncpg"
    assert normalise_url("sqlite:///x.db").drivername == "sqlite+aiosqlite"
    assert normalise_url("sqlite+aiosqlite:///x.db").drivername == "sqlite+aiosqlite"
    with pytest.raises(ConfigError, match="backend 'mysql'"):
        normalise_url("mysql://x/y")
    with pytest.raises(ConfigError, match="not a valid"):
        normalise_url("::nonsense::")


async def test_backend_settings(db_url: str) -> None:
    engine = create_engine(db_url)
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


async def test_unit_of_work_commits_or_rolls_back_everything(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.unit_of_work() as uow:
            await uow.sites.add("lmu", "LMU")
            await uow.audit.append("admin", "site.add", "site:lmu")
            raise RuntimeError("boom")
    async with store.unit_of_work() as uow:
        assert await uow.sites.all() == []
        assert (await uow.audit.head()).seq == 0
        await uow.sites.add("lmu", "LMU")
        await uow.audit.append("admin", "site.add", "site:lmu")
    async with store.unit_of_work() as uow:
        assert [s.id for s in await uow.sites.all()] == ["lmu"]
        assert (await uow.audit.head()).seq == 1
        assert await uow.session.scalar(text("SELECT count(*) FROM audit_log")) == 1
