"""The node's Alembic environment, ``migrations/``, driven from Python (tests, CLI, Helm Job).

``migrations/`` lies beside the package in the repository (found relative to this file), its
revisions in ``migrations/versions/`` and its version table ``alembic_version``. The
machinery is :class:`dic_connector.database.migrate.Migrations`; these functions bind it to
the node's metadata. :func:`schema_diff` ignores tables that are not the node's, so the
connector's state schema may share the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import URL

from dic_connector.database.migrate import Migrations
from dic_connector.node.store.base import Base
from dic_connector.node.store.models import AuditEntry as _AuditEntry  # noqa: F401 (registers tables)

MIGRATIONS_DIR = Path(__file__).resolve().parents[3] / "migrations"
VERSION_TABLE = "alembic_version"


def migrations() -> Migrations:
    """The node's environment: ``migrations/``, the node's metadata, ``alembic_version``."""
    return Migrations(MIGRATIONS_DIR, Base.metadata, VERSION_TABLE)


def alembic_config() -> Config:
    """An Alembic config pointing at ``migrations/`` without reading ``alembic.ini``."""
    return migrations().config()


async def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision`` (default: the newest)."""
    await migrations().upgrade(url, revision)


async def downgrade(url: str | URL, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (default: empty)."""
    await migrations().downgrade(url, revision)


def head_revision() -> str | None:
    """The newest revision in ``migrations/versions``."""
    return migrations().head_revision()


async def current_revision(url: str | URL) -> str | None:
    """The revision the database at ``url`` is at (``None`` for an empty database)."""
    return await migrations().current_revision(url)


async def schema_diff(url: str | URL) -> list[Any]:
    """Differences between the live schema and the node's models (empty when they agree)."""
    return await migrations().schema_diff(url)
