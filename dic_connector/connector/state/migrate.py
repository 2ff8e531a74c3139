"""The connector's Alembic environment, ``migrations/connector/``, driven from Python.

Its revisions live in ``migrations/connector/versions/`` (outside the node's
``migrations/versions/``, which is all the node's environment reads) and its version table
is ``connector_alembic_version``, so the node's history and this one never meet, even in one
database. The directory is found relative to this file, as the node's is. The machinery is
:class:`dic_connector.database.migrate.Migrations`.
"""

from __future__ import annotations

from pathlib import Path

from dic_connector.connector.state.models import StateBase
from dic_connector.database.migrate import Migrations

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations" / "connector"
VERSION_TABLE = "connector_alembic_version"


def migrations() -> Migrations:
    """The connector's environment: its directory, the state metadata, its version table."""
    return Migrations(MIGRATIONS_DIR, StateBase.metadata, VERSION_TABLE)
