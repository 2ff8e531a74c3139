"""Alembic environment of the connector's state database (SQLite and PostgreSQL).

A history of its own, separate from the node's ``migrations/``: revisions in ``versions/``
here, version table ``connector_alembic_version``. The URL is taken, in order, from
``alembic -n connector -x url=...``, the ``DIC_CONNECTOR_STATE_DATABASE_URL`` environment
variable, and ``sqlalchemy.url`` in the ``[connector]`` section of ``alembic.ini``;
:mod:`dic_connector.connector.state.migrate` hands it an open connection instead. What it does
is :func:`dic_connector.database.migrate.run_environment`.
"""

from __future__ import annotations

from dic_connector.connector.state.models import StateBase
from dic_connector.database.migrate import run_environment

run_environment(StateBase.metadata, version_table="connector_alembic_version",
                url_variable="DIC_CONNECTOR_STATE_DATABASE_URL")
