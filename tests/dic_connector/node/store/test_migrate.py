"""Migrations: empty -> head -> base on both backends, and the models equal the migrated schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import inspect

import dic_connector.node.store.models  # noqa: F401  (defines the tables on Base.metadata)
from dic_connector.database.engine import create_engine
from dic_connector.node.store import migrate
from dic_connector.node.store.base import Base
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring

REPO_ROOT = Path(__file__).resolve().parents[4]


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


async def test_schema_diff_sees_a_missing_table(empty_db_url: str) -> None:
    db_url = empty_db_url
    await migrate.upgrade(db_url)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DROP TABLE results")
    finally:
        await engine.dispose()
    diff = await migrate.schema_diff(db_url)
    assert [d[0] for d in diff] == ["add_table"]


def test_alembic_command_line_takes_the_url_from_x_or_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini")]
    env = {k: v for k, v in os.environ.items() if k != "DIC_DATABASE_URL"}
    subprocess.run([*alembic, "-x", f"url={url}", "upgrade", "head"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=60)
    current = subprocess.run([*alembic, "current"], cwd=tmp_path, check=True, text=True,
                             capture_output=True, timeout=60,
                             env={**env, "DIC_DATABASE_URL": url})
    assert f"{migrate.head_revision()} (head)" in current.stdout


def test_revisions_do_not_import_the_application() -> None:
    """Old revisions must keep working when the models change: plain SQLAlchemy types only."""
    for path in (REPO_ROOT / "migrations" / "versions").glob("*.py"):
        assert "dic_connector" not in path.read_text(), path.name


async def test_0005_turns_refused_outbox_messages_into_parked_ones(empty_db_url: str) -> None:
    await migrate.upgrade(empty_db_url, "0004")
    engine = create_engine(empty_db_url)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(
                "INSERT INTO peer_outbox (peer, kind, method, path, body, created_at, attempts, "
                "next_attempt_at, outcome, last_error) VALUES (1, 'approval', 'POST', '/x', "
                "'{}', CURRENT_TIMESTAMP, 1, CURRENT_TIMESTAMP, 'refused', 'node-1 refused: 403')")
        await migrate.upgrade(empty_db_url)
        async with engine.connect() as conn:
            row = (await conn.exec_driver_sql(
                "SELECT outcome, parked_reason, peer_status, park_cause FROM peer_outbox"
            )).one()
        assert tuple(row) == ("parked", "node-1 refused: 403", None, "refused")
        await migrate.downgrade(empty_db_url, "0004")
        async with engine.connect() as conn:
            outcome = (await conn.exec_driver_sql("SELECT outcome FROM peer_outbox")).scalar()
        assert outcome == "refused"
    finally:
        await engine.dispose()


async def test_0006_prepared_versions_go_back_to_receiving_on_downgrade(empty_db_url: str) -> None:
    await migrate.upgrade(empty_db_url)
    store = Store.open(empty_db_url, NodeKeyring.generate("node-0"))
    try:
        async with store.unit_of_work() as uow:
            await uow.sites.add("tm", "LMU")
            dataset = await uow.datasets.create("tm", "cohort")
            version = await uow.versions.create(dataset.id, {"columns": [{"name": "age"}]}, 1)
            await uow.versions.add_blob(version.id, "age", bytes(16))
            await uow.versions.prepare(version.id)
    finally:
        await store.close()
    await migrate.downgrade(empty_db_url, "0005")
    engine = create_engine(empty_db_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("SELECT state FROM dataset_versions")).scalar() \
                == "receiving"
            columns = await conn.run_sync(
                lambda c: {col["name"] for col in inspect(c).get_columns("dataset_versions")})
        assert "prepared_at" not in columns
    finally:
        await engine.dispose()
    await migrate.upgrade(empty_db_url)
