"""The connector's migrations: empty -> head -> base on both backends, a history of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from dic_connector.connector.state import migrate
from dic_connector.connector.state.models import StateBase
from dic_connector.connector.state.store import StateStore
from dic_connector.database.engine import create_engine
from dic_connector.node.store import migrate as node_migrate

REPO_ROOT = Path(__file__).resolve().parents[4]


async def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_upgrade_to_head_and_downgrade_to_base(state_url: str) -> None:
    environment = migrate.migrations()
    assert await environment.current_revision(state_url) is None
    store = StateStore(state_url)
    try:
        assert await store.migrate() == environment.head_revision() == "0003"
        assert await _tables(state_url) == set(StateBase.metadata.tables) | {
            "connector_alembic_version"}

        await environment.downgrade(state_url)
        assert await environment.current_revision(state_url) is None
        assert await _tables(state_url) <= {"connector_alembic_version"}

        assert await store.migrate() == "0003"  # and up again: downgrade left nothing behind
        assert await store.check_schema() == []
    finally:
        await store.close()


async def test_check_schema_names_what_is_missing(state_url: str) -> None:
    store = StateStore(state_url)
    try:
        problems = await store.check_schema()
        assert problems[0] == "revision none is not head 0003"
        assert {"add_table connector_runs", "add_table connector_watermarks",
                "add_table connector_pending_erasures",
                "add_table connector_lineage",
                "add_table connector_subscription_events"} <= set(problems)
        await store.migrate()
        assert await store.check_schema() == []
        engine = create_engine(state_url)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("DROP TABLE connector_pending_erasures")
        finally:
            await engine.dispose()
        assert await store.check_schema() == ["add_table connector_pending_erasures"]
    finally:
        await store.close()


def test_the_two_histories_do_not_mix() -> None:
    """The node's environment reads only ``migrations/versions``; the connector's only its own."""
    node = ScriptDirectory.from_config(node_migrate.alembic_config())
    connector = ScriptDirectory.from_config(migrate.migrations().config())
    node_files = {Path(script.path).parent for script in node.walk_revisions()}
    connector_files = {Path(script.path).parent for script in connector.walk_revisions()}
    assert node_files == {REPO_ROOT / "migrations" / "versions"}
    assert connector_files == {REPO_ROOT / "migrations" / "connector" / "versions"}
    assert [script.revision for script in connector.walk_revisions()] == ["0003", "0002", "0001"]
    assert migrate.MIGRATIONS_DIR == REPO_ROOT / "migrations" / "connector"


def test_alembic_command_line_has_a_connector_section(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    alembic = [sys.executable, "-m", "alembic", "-c", str(REPO_ROOT / "alembic.ini"),
               "-n", "connector"]
    env = {k: v for k, v in os.environ.items()
           if k not in ("DIC_DATABASE_URL", "DIC_CONNECTOR_STATE_DATABASE_URL")}
    subprocess.run([*alembic, "-x", f"url={url}", "upgrade", "head"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=60)
    current = subprocess.run([*alembic, "current"], cwd=tmp_path, check=True, text=True,
                             capture_output=True, timeout=60,
                             env={**env, "DIC_CONNECTOR_STATE_DATABASE_URL": url})
    assert "0003 (head)" in current.stdout
    checked = subprocess.run([*alembic, "check"], cwd=tmp_path, text=True, capture_output=True,
                             timeout=60, env={**env, "DIC_CONNECTOR_STATE_DATABASE_URL": url})
    assert checked.returncode == 0, checked.stderr[-2000:]


def test_revisions_do_not_import_the_application() -> None:
    """Old revisions must keep working when the models change: plain SQLAlchemy types only."""
    paths = list((REPO_ROOT / "migrations" / "connector" / "versions").glob("*.py"))
    assert paths
    for path in paths:
        assert "dic_connector" not in path.read_text(), path.name
