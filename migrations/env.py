"""Alembic environment of the node's service database (SQLite and PostgreSQL).

The URL is taken, in order, from ``alembic -x url=...``, the ``DIC_DATABASE_URL`` environment
variable, and ``sqlalchemy.url`` in ``alembic.ini``; :mod:`dic_connector.node.store.migrate`
hands it an open connection instead. What it does (batch mode and foreign-key checks on
SQLite, the table filter that ignores the connector's tables in a shared database) is
:func:`dic_connector.database.migrate.run_environment`.
"""

from __future__ import annotations

import dic_connector.node.store.models  # noqa: F401  (defines the tables on Base.metadata)
from dic_connector.database.migrate import run_environment
from dic_connector.node.store.base import Base

run_environment(Base.metadata, version_table="alembic_version", url_variable="DIC_DATABASE_URL")
