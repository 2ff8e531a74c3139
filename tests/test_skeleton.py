"""The project's own promises about its layout."""

from __future__ import annotations

import ast
from pathlib import Path

import asyncpg

from dic_connector import cli

ROOT = Path(__file__).resolve().parent.parent


def test_mpc_never_imports_dic_connector() -> None:
    offenders = []
    for path in (ROOT / "mpc").rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] == "dic_connector"]
    assert offenders == []


def test_demo_command_is_wired() -> None:
    """The demo itself runs end to end in tests/e2e/test_demo.py."""
    args = cli.build_parser().parse_args(["demo", "--keep"])
    assert args.command == "demo" and args.keep


async def test_postgres_cluster_answers(fresh_postgres_db: str) -> None:
    conn = await asyncpg.connect(fresh_postgres_db)
    try:
        assert await conn.fetchval("SELECT 40 + 2") == 42
        version = await conn.fetchval("SHOW server_version")
        assert version.startswith("15")
    finally:
        await conn.close()
