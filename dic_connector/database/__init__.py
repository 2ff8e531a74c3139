"""The databases the deployables keep for themselves: engines, column types, Alembic.

The compute node keeps its service database (:mod:`dic_connector.node.store`) and the
hospital's connector a small state database of its own
(:mod:`dic_connector.connector.state`). Both run on SQLite (embedded default) or PostgreSQL,
and both need the same things from SQLAlchemy and Alembic, which live here so that neither
deployable imports the other. Each keeps its own declarative base and its own migrations.

Modules, in dependency order:

- ``columns``  constraint naming convention, UTC datetime and str-Enum column types
- ``inline``   aiosqlite's connection with calls on the loop's thread, but those that may
               wait for a lock
- ``engine``   ``create_engine(url)`` for SQLite (aiosqlite) and PostgreSQL (asyncpg)
- ``migrate``  an Alembic environment driven from Python: upgrade, downgrade, revision,
               schema differences, given its script directory, metadata and version table
"""

from __future__ import annotations
