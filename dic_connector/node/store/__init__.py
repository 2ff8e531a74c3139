"""Storage of one node: SQLAlchemy 2 async models, repositories, encryption at rest, audit log.

Modules in dependency order (lower layers never import higher ones):

- ``base``           the node's declarative base (engine and column types:
                     :mod:`dic_connector.database`)
- ``conflicts``      inserts whose constraint violations become ``ConflictError`` (no SQL leaks)
- ``enums``          status vocabularies (version state, roles, request status, ...)
- ``models``         the tables
- ``audit``          the append-only, hash-chained audit log
- ``delta``          delta versions: a version composed from its base's kept rows and
                     fresh rows (checks and the copy)
- ``datasets``       sites, datasets, dataset versions (state machine) and share blobs
- ``principals``     principals and hashed API tokens
- ``analyses``       studies, analysis requests, signed approvals, standing policies, results
- ``subscriptions``  FHIR subscription state (last event number, gap detection)
- ``outbox``         control messages owed to the peer nodes (transactional outbox)
- ``ledger``         the release ledger: what each release opened, per contributor (shares)
- ``peer_audit``     the peers' audit chain heads as observed here, and detected mismatches
                     (a peer's log truncated or rewritten), open until acknowledged
- ``unit_of_work``   one transaction with every repository bound to it
- ``migrate``        the node's Alembic environment, ``migrations/``, driven from Python

Repositories take an ``AsyncSession`` and never commit; the caller (usually
:class:`~dic_connector.node.store.unit_of_work.UnitOfWork`) owns the transaction, so an action and
its audit entry commit together or not at all.
"""

from __future__ import annotations
