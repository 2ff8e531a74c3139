"""The connector's own state database: watermarks, run history, erasures still owed.

A connector remembers little between runs, and nothing from the data: per dataset the
**watermarks** an incremental read resumes from (``"Patient"`` -> the FHIR instant of the last
``_lastUpdated`` search, ``"bulk"`` -> the last ``$export`` ``transactionTime``), the **run
history** in counts only (resources read, patients, rows rejected per column and rule, bytes
per node, stage timings), and the **dataset versions** whose shares some node has not yet
confirmed erasing, and of each FHIR Subscription the **event numbers** seen (the highest,
and the lower ones not yet received), so a restart neither mistakes old numbers for gaps nor
misses one. Never a value, never a patient id.

SQLite by default (a file beside ``connector.yaml``), PostgreSQL as an option; the schema has
its own Alembic history in ``migrations/connector/`` and its own version table, so it can
share a PostgreSQL database with a node's schema.

Modules, in dependency order:

- ``records``  what the store hands out: ``RunStatus``, ``RunCounts``, ``RunRecord``
- ``models``   the tables, on a declarative base of their own (not the node's)
- ``migrate``  the connector's Alembic environment, ``migrations/connector/``, from Python
- ``store``    ``StateStore``: runs start and finish, a finished run's watermarks commit with
               it in one transaction, interrupted runs are marked at start-up, the
               subscriptions' event numbers are kept
"""

from __future__ import annotations

from dic_connector.connector.state.records import RunCounts, RunRecord, RunStatus
from dic_connector.connector.state.store import StateStore

__all__ = ["RunCounts", "RunRecord", "RunStatus", "StateStore"]
