"""One transaction with every repository bound to it, and the node's store handle.

:class:`Store` is what the application keeps for its lifetime (open it in an aiohttp
``cleanup_ctx``): the engine, the session factory and the node's keyring.
``async with store.unit_of_work() as uow:`` opens one transaction; the body uses
``uow.versions``, ``uow.audit``, ...; leaving the block normally commits, an exception rolls
everything back. An action and its audit entry therefore commit together or not at all, and
a failed upload never leaves a partial version behind.

``async with store.reading() as uow:`` is the same for a body that only reads: a read-only
transaction (:func:`dic_connector.database.engine.read_only_options`), which on SQLite takes no
lock and so never waits for a writer, and which the database refuses to write in. Audit
entries cannot be appended in it.

On SQLite the node's writers also queue on one :class:`asyncio.Lock` per store before SQLite's
own write lock. SQLite's busy handler polls with sleeps growing to 100 ms
(``sqliteDefaultBusyCallback``), so under contention a writer slept up to a third of a second
after the lock was free (p99 335 ms of lock wait in ``benchmarks/coordination.py``); the
in-process lock hands over in FIFO order at once. Other processes (a migration, ``dic node``
admin commands) still meet the busy timeout as before.

After a writing unit of work commits, the ids of the analysis requests whose row, approvals
or result it wrote are told to the store's :attr:`Store.request_observers` (the API's
long-poll of a request's status, :mod:`dic_connector.node.api.changes`): every change goes
through a unit of work, whoever makes it (the API, the coordination loop, a peer's
message), so no code path can change a status without the waiters hearing of it. A rolled
back transaction tells nobody.

This is the Unit of Work pattern (Fowler, *Patterns of Enterprise Application Architecture*,
2002) on top of SQLAlchemy's session, which already tracks the changes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from dic_connector.database.engine import (
    SQLITE_BUSY_TIMEOUT_MS,
    create_engine,
    read_only_options,
    session_factory,
)
from dic_connector.errors import StoreError
from dic_connector.node.store.analyses import (
    AnalysisRequestRepository,
    ApprovalRepository,
    PolicyRepository,
    ResultRepository,
    StudyRepository,
)
from dic_connector.node.store.audit import AuditLog, DeferredAuditLog, VerifiedPrefix
from dic_connector.node.store.datasets import (
    DatasetRepository,
    DatasetVersionRepository,
    SiteRepository,
)
from dic_connector.node.store.ledger import LedgerRepository
from dic_connector.node.store.models import AnalysisRequest, ApiToken, Approval, Principal, Result
from dic_connector.node.store.outbox import OutboxRepository
from dic_connector.node.store.peer_audit import PeerAuditRepository
from dic_connector.node.store.principals import PrincipalRepository, TokenRepository
from dic_connector.node.store.subscriptions import SubscriptionRepository
from dic_connector.trust.keyring import NodeKeyring

#: Told the seconds a caller queued for a lock (a Prometheus histogram's ``observe``).
WaitObserver = Callable[[float], None]
#: Told the ids of the analysis requests a committed transaction changed.
RequestObserver = Callable[[frozenset[uuid.UUID]], None]


class UnitOfWork:
    """Repositories sharing one session and one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: NodeKeyring,
                 verified: VerifiedPrefix | None = None, *,
                 read_only: dict[str, Any] | None = None,
                 writers: asyncio.Lock | None = None,
                 on_writer_wait: WaitObserver | None = None,
                 on_outbox: Callable[[], None] | None = None,
                 request_observers: list[RequestObserver] | None = None,
                 credentials: CredentialsGeneration | None = None) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._session: AsyncSession | None = None
        #: execution options of a read-only transaction, or None for a writing one
        self._read_only = read_only
        #: the store's queue of SQLite writers (None: PostgreSQL, or a reader)
        self._writers = writers
        self._holds_writers = False
        #: told how long this unit of work queued for the SQLite writers (seconds)
        self._on_writer_wait = on_writer_wait
        #: called after a commit that enqueued peer messages
        self._on_outbox = on_outbox
        #: told the requests this transaction changed, after it commits
        self._request_observers = request_observers or []
        #: the requests whose row, approvals or result this transaction wrote
        self.changed_requests: set[uuid.UUID] = set()
        #: moved on after a commit that wrote a principal or an API token (None: a reader)
        self._credentials = credentials
        self._credentials_changed = False
        #: the store's record of how far its audit chain is verified (shared by every
        #: unit of work of one store)
        self.verified_audit = verified or VerifiedPrefix()

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside 'async with'")
        return self._session

    @property
    def read_only(self) -> bool:
        return self._read_only is not None

    async def __aenter__(self) -> UnitOfWork:
        if self._writers is not None:
            queued = time.perf_counter()
            try:
                await asyncio.wait_for(self._writers.acquire(), SQLITE_BUSY_TIMEOUT_MS / 1000)
            except TimeoutError:
                raise StoreError("database is locked: no write transaction could start within "
                                 f"{SQLITE_BUSY_TIMEOUT_MS / 1000:.0f} s") from None
            self._holds_writers = True
            if self._on_writer_wait is not None:
                self._on_writer_wait(time.perf_counter() - queued)
        session = self._sessions()
        try:
            await session.begin()
            if self._read_only is not None:
                await session.connection(execution_options=self._read_only)
        except BaseException:
            await session.close()
            self._release()
            raise
        self._session = session
        if self._request_observers or self._credentials is not None:
            event.listen(session.sync_session, "after_flush", self._note_changes)
        self.sites = SiteRepository(session)
        self.datasets = DatasetRepository(session)
        self.versions = DatasetVersionRepository(session, self._keyring)
        self.principals = PrincipalRepository(session)
        self.tokens = TokenRepository(session)
        self.studies = StudyRepository(session)
        self.requests = AnalysisRequestRepository(session)
        self.approvals = ApprovalRepository(session)
        self.policies = PolicyRepository(session)
        self.results = ResultRepository(session)
        self.subscriptions = SubscriptionRepository(session)
        self.outbox = OutboxRepository(session)
        self.ledger = LedgerRepository(session, self._keyring)
        self.peer_audit = PeerAuditRepository(session)
        self.audit = DeferredAuditLog(AuditLog(session))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        session = self.session
        try:
            if exc_type is None and self.read_only:
                if self.audit.pending:
                    raise RuntimeError("audit entries appended in a read-only unit of work")
                # nothing to write; COMMIT ends the read snapshot and, unlike a rollback,
                # keeps loaded objects usable (expire_on_commit=False)
                await session.commit()
            elif exc_type is None:
                await self.audit.flush()  # the chain lock last: see DeferredAuditLog
                await session.commit()
                if self._credentials_changed and self._credentials is not None:
                    self._credentials.value += 1
                if self.outbox.enqueued and self._on_outbox is not None:
                    self._on_outbox()
                if self.changed_requests:
                    changed = frozenset(self.changed_requests)
                    for observer in self._request_observers:
                        observer(changed)
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None
            self._release()

    def _note_changes(self, session: Session, _context: object) -> None:
        """``after_flush``: the requests whose rows, approvals or result the flush wrote
        (``new`` and ``dirty`` still hold what was flushed, SQLAlchemy's documented
        contract of this event)."""
        for obj in (*session.new, *session.dirty, *session.deleted):
            if isinstance(obj, AnalysisRequest):
                self.changed_requests.add(obj.id)
            elif isinstance(obj, Approval | Result):
                self.changed_requests.add(obj.request_id)
            elif isinstance(obj, ApiToken | Principal):
                self._credentials_changed = True

    def _release(self) -> None:
        if self._holds_writers and self._writers is not None:
            self._holds_writers = False
            self._writers.release()


@dataclass
class CredentialsGeneration:
    """A counter moved on by every commit of this process that wrote a principal or an API
    token (a revocation, a disabled principal, a role, a token's last use)."""

    value: int = 0


class Store:
    """The node's database handle: engine, sessions, keyring."""

    def __init__(self, engine: AsyncEngine, keyring: NodeKeyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self.sessions = session_factory(engine)
        self.verified_audit = VerifiedPrefix()
        self._read_only = read_only_options(engine)
        #: SQLite writers of this process queue here (see the module docstring)
        self._writers = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        #: told how long each writing unit of work queued for ``_writers`` (the node's
        #: ``dic_lock_wait_seconds{lock="database_writers"}``); None: not observed
        self.on_writer_wait: WaitObserver | None = None
        #: called after each commit that enqueued peer messages (the replicator's ``wake``:
        #: :mod:`.outbox`); None: nobody delivers them in this process
        self.on_outbox: Callable[[], None] | None = None
        #: told, after each commit, the analysis requests it changed (row, approvals or
        #: result); each app serving this store adds its long-poll's ``notify`` while it
        #: runs (:mod:`dic_connector.node.api.changes`)
        self.request_observers: list[RequestObserver] = []
        #: how many commits of this process wrote principals or API tokens (what
        #: :class:`~dic_connector.node.api.auth.Authenticator` validates its cache with)
        self.credentials = CredentialsGeneration()

    @classmethod
    def open(cls, url: str | URL, keyring: NodeKeyring) -> Store:
        """A store on ``url`` (migrations are run separately, see ``store.migrate``)."""
        return cls(create_engine(url), keyring)

    def unit_of_work(self) -> UnitOfWork:
        """One writing transaction (see the module docstring)."""
        return UnitOfWork(self.sessions, self.keyring, self.verified_audit,
                          writers=self._writers, on_writer_wait=self.on_writer_wait,
                          on_outbox=self.on_outbox, request_observers=self.request_observers,
                          credentials=self.credentials)

    def reading(self) -> UnitOfWork:
        """One read-only transaction: no lock on SQLite, refused writes, no audit entries."""
        return UnitOfWork(self.sessions, self.keyring, self.verified_audit,
                          read_only=self._read_only)

    async def close(self) -> None:
        await self.engine.dispose()
