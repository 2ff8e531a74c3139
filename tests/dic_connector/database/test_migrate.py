"""Two Alembic environments in one database: the node's and the connector's never interfere."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, inspect

import dic_connector.node.store.models  # noqa: F401  (defines the tables on Base.metadata)
from dic_connector.connector.state import migrate as connector_migrate
from dic_connector.connector.state.models import StateBase
from dic_connector.connector.state.store import RunStatus, StateStore
from dic_connector.database.engine import create_engine
from dic_connector.database.migrate import Migrations, describe, own_tables
from dic_connector.errors import StoreError
from dic_connector.node.store import migrate as node_migrate
from dic_connector.node.store.base import Base


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_node_and_connector_schemas_share_one_database(empty_db_url: str) -> None:
    url = empty_db_url
    node, connector = node_migrate.migrations(), connector_migrate.migrations()
    await node.upgrade(url)
    await connector.upgrade(url)
    assert await node.current_revision(url) == node.head_revision()
    assert await connector.current_revision(url) == connector.head_revision()
    assert await node.schema_diff(url) == []
    assert await connector.schema_diff(url) == []
    state = StateStore(url)
    try:
        assert await state.check_schema() == []
        run_id = await state.start_run("adrenal", "manual")
        await state.finish_run(run_id, RunStatus.SUCCEEDED,
                               watermarks={"Patient": "2026-01-01T00:00:00Z"})

        await connector.downgrade(url)  # the connector's history leaves the node's alone
        assert await _tables(url) == (set(Base.metadata.tables) | {"alembic_version",
                                                                   "connector_alembic_version"})
        assert await node.schema_diff(url) == []
        assert await node.current_revision(url) == node.head_revision()
        await state.migrate()
        await node.downgrade(url)  # and the other way round
        assert await _tables(url) == (set(StateBase.metadata.tables) | {
            "alembic_version", "connector_alembic_version"})
        assert await state.check_schema() == []
        assert await state.runs() == []  # the downgrade dropped the state tables
    finally:
        await state.close()


def test_own_tables_sees_only_its_metadata() -> None:
    include = own_tables(StateBase.metadata)
    assert include("connector_runs", "table", {})
    assert not include("datasets", "table", {})
    assert not include("alembic_version", "table", {})
    assert include("dataset", "column", {"table_name": "connector_runs"})
    assert include(None, "schema", {})


def test_describe_names_what_differs_and_nothing_else() -> None:
    table = Table("runs", MetaData(), Column("id", Integer, primary_key=True),
                  Column("status", String(16), server_default="secret-default"))
    index = Index("ix_runs_status", table.c.status)
    assert describe(("add_table", table)) == "add_table runs"
    assert describe(("remove_index", index)) == "remove_index runs.ix_runs_status"
    assert describe(("add_column", None, "runs", table.c.status)) == "add_column runs.status"
    assert describe([("modify_type", None, "runs", "status", {}, String(8), String(16)),
                     ("modify_default", None, "runs", "status", {}, "a", "b")]) == \
        "modify_type runs.status; modify_default runs.status"
    assert "secret" not in describe(("add_column", None, "runs", table.c.status))


def test_a_missing_environment_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="Alembic migrations not found"):
        Migrations(tmp_path, MetaData()).head_revision()
