"""Migrations: empty -> head -> base on both backends, and the models equal the migrated schema."""

from __future__ import annotations

from sqlalchemy import inspect

from dic_connector.store import migrate
from dic_connector.store.engine import create_engine
from dic_connector.store.models import Base


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_to_head_and_downgrade_to_base(empty_db_url: str) -> None:
    assert await migrate.current_revision(empty_db_url) is None
    await migrate.upgrade(empty_db_url)
    assert await migrate.current_revision(empty_db_url) == migrate.head_revision()
    assert await _tables(empty_db_url) == set(Base.metadata.tables) | {"alembic_version"}

    await migrate.downgrade(empty_db_url)
    assert await migrate.current_revision(empty_db_url) is None
    assert await _tables(empty_db_url) <= {"alembic_version"}

    await migrate.upgrade(empty_db_url)  # and up again: downgrade left nothing behind
    assert await migrate.current_revision(empty_db_url) == migrate.head_revision()


async def test_models_equal_migrated_schema(db_url: str) -> None:
    assert await migrate.schema_diff(db_url) == []


async def test_schema_diff_sees_a_missing_table(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE results")
    finally:
        await engine.dispose()
    diff = await migrate.schema_diff(db_url)
    assert [d[0] for d in diff] == ["add_table"]
