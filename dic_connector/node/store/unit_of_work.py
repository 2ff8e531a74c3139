"""One transaction with every repository bound to it, and the node's store handle.

:class:`Store` is what the application keeps for its lifetime (open it in an aiohttp
``cleanup_ctx``): the engine, the session factory and the node's keyring.
``async with store.unit_of_work() as uow:`` opens one transaction; the body uses
``uow.versions``, ``uow.audit``, ...; leaving the block normally commits, an exception rolls
everything back. An action and its audit entry therefore commit together or not at all, and
a failed upload never leaves a partial version behind.

This is the Unit of Work pattern (Fowler, *Patterns of Enterprise Application Architecture*,
2002) on top of SQLAlchemy's session, which already tracks the changes.
"""

from __future__ import annotations

from types import TracebackType

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from dic_connector.database.engine import create_engine, session_factory
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
from dic_connector.node.store.outbox import OutboxRepository
from dic_connector.node.store.principals import PrincipalRepository, TokenRepository
from dic_connector.node.store.subscriptions import SubscriptionRepository
from dic_connector.trust.keyring import NodeKeyring


class UnitOfWork:
    """Repositories sharing one session and one transaction."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], keyring: NodeKeyring,
                 verified: VerifiedPrefix | None = None) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._session: AsyncSession | None = None
        #: the store's record of how far its audit chain is verified (shared by every
        #: unit of work of one store)
        self.verified_audit = verified or VerifiedPrefix()

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("UnitOfWork used outside 'async with'")
        return self._session

    async def __aenter__(self) -> UnitOfWork:
        session = self._sessions()
        await session.begin()
        self._session = session
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
        self.audit = DeferredAuditLog(AuditLog(session))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        session = self.session
        try:
            if exc_type is None:
                await self.audit.flush()  # the chain lock last: see DeferredAuditLog
                await session.commit()
            else:
                await session.rollback()
        finally:
            await session.close()
            self._session = None


class Store:
    """The node's database handle: engine, sessions, keyring."""

    def __init__(self, engine: AsyncEngine, keyring: NodeKeyring) -> None:
        self.engine = engine
        self.keyring = keyring
        self.sessions = session_factory(engine)
        self.verified_audit = VerifiedPrefix()

    @classmethod
    def open(cls, url: str | URL, keyring: NodeKeyring) -> Store:
        """A store on ``url`` (migrations are run separately, see ``store.migrate``)."""
        return cls(create_engine(url), keyring)

    def unit_of_work(self) -> UnitOfWork:
        return UnitOfWork(self.sessions, self.keyring, self.verified_audit)

    async def close(self) -> None:
        await self.engine.dispose()
