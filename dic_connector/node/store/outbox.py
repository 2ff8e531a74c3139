"""The peer outbox: control messages this node owes the other two nodes.

The transactional outbox pattern (Richardson, *Microservices Patterns*, 2018, ch. 3): a
handler that accepts a request, stores an approval or erases a dataset also enqueues, *in the
same transaction*, one message per peer announcing it. Either both commit or neither does, so
a peer can never miss a change this node made (it is retried) nor hear of a change that was
rolled back. The replicator (:mod:`dic_connector.node.coordination.replication`) delivers the
messages that are due per peer, oldest first, each on its own: one that fails waits for its
next attempt without holding up the others. A commit that enqueued wakes the replicator of
this process at once (:attr:`~dic_connector.node.store.unit_of_work.Store.on_outbox`), so it
need not poll an empty outbox: idle, it looks again when the next pending message is due.

A message ends ``delivered`` (the peer stored it, or already had it: peer endpoints are
idempotent), or is ``parked``: a dead letter (Hohpe and Woolf, *Enterprise Integration
Patterns*, 2003, "Dead Letter Channel") kept with the peer's status, its problem title and
the reason, because the peer refused it or the retries ran out. An admin lists parked
messages and replays (pending again, attempts from zero) or drops them (``dropped``, kept
for the record). Messages parked only because the peer never answered are revived by the
replicator itself once that peer answers again.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import ConflictError, NotFoundError
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.models import PeerMessage

DELIVERED = "delivered"
PARKED = "parked"
DROPPED = "dropped"
#: Why a message was parked: the peer refused it (a 4xx), its retries ran out on answers
#: or timeouts, or no connection to the peer could be made through any of them.
REFUSED, FAILED, UNREACHABLE = "refused", "failed", "unreachable"
#: How :meth:`OutboxRepository.counts` names messages still to be delivered.
PENDING = "pending"


class OutboxRepository:
    """Enqueue, fetch, settle, park, replay and drop peer messages."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        #: whether this transaction enqueued a message (its unit of work then tells the
        #: store's ``on_outbox`` after the commit, which wakes the replicator)
        self.enqueued = False

    async def enqueue(self, peers: list[int], kind: str, method: str, path: str,
                      body: dict[str, Any]) -> None:
        """One message per peer; delivered after this transaction commits."""
        for peer in peers:
            self._session.add(PeerMessage(peer=peer, kind=kind, method=method, path=path,
                                          body=body, attempts=0, next_attempt_at=utcnow()))
        await self._session.flush()
        self.enqueued = self.enqueued or bool(peers)

    async def next_due(self, peer: int) -> dt.datetime | None:
        """When ``peer``'s earliest pending message is next due (None: none is pending)."""
        due: dt.datetime | None = await self._session.scalar(
            select(func.min(PeerMessage.next_attempt_at))
            .where(PeerMessage.peer == peer, PeerMessage.outcome.is_(None)))
        return due

    async def due(self, peer: int, limit: int, now: dt.datetime | None = None
                  ) -> list[PeerMessage]:
        """Pending messages for ``peer`` whose next attempt is due, oldest first."""
        return list(await self._session.scalars(
            select(PeerMessage).where(PeerMessage.peer == peer, PeerMessage.outcome.is_(None),
                                      PeerMessage.next_attempt_at <= (now or utcnow()))
            .order_by(PeerMessage.id).limit(limit)))

    async def pending_about(self, *paths: str) -> set[int]:
        """The peers with a message still to be delivered at one of ``paths`` or below it
        (e.g. a request and its approvals: ``/v1/peer/requests/{id}``)."""
        where = []
        for path in paths:
            escaped = path.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where += [PeerMessage.path == path,
                      PeerMessage.path.like(f"{escaped}/%", escape="\\")]
        rows = await self._session.scalars(
            select(PeerMessage.peer).distinct()
            .where(PeerMessage.outcome.is_(None), or_(*where)))
        return {int(peer) for peer in rows}

    async def pending(self, peer: int) -> int:
        return int(await self._session.scalar(
            select(func.count()).select_from(PeerMessage)
            .where(PeerMessage.peer == peer, PeerMessage.outcome.is_(None))) or 0)

    async def counts(self) -> dict[tuple[int, str], int]:
        """Messages by (peer, ``pending`` or ``parked``)."""
        rows = await self._session.execute(
            select(PeerMessage.peer, PeerMessage.outcome, func.count())
            .where(PeerMessage.outcome.is_(None) | (PeerMessage.outcome == PARKED))
            .group_by(PeerMessage.peer, PeerMessage.outcome))
        return {(int(peer), outcome or PENDING): int(n) for peer, outcome, n in rows}

    async def _pending_message(self, message_id: int) -> PeerMessage | None:
        """The message if it is still pending (an admin may have dropped it meanwhile)."""
        message = await self._session.get(PeerMessage, message_id)
        return message if message is not None and message.outcome is None else None

    async def delivered(self, message_id: int, status: int = 200) -> None:
        message = await self._pending_message(message_id)
        if message is not None:
            message.outcome, message.finished_at = DELIVERED, utcnow()
            message.attempts += 1
            message.peer_status = status
            await self._session.flush()

    async def retry_later(self, message_id: int, error: str, delay: dt.timedelta,
                          status: int | None = None, title: str | None = None) -> None:
        message = await self._pending_message(message_id)
        if message is not None:
            message.attempts += 1
            message.last_error = error[:500]
            message.peer_status, message.problem_title = status, _title(title)
            message.next_attempt_at = utcnow() + delay
            await self._session.flush()

    async def park(self, message_id: int, cause: str, reason: str, error: str,
                   status: int | None = None, title: str | None = None) -> PeerMessage | None:
        """Make a pending message a dead letter (``cause``: REFUSED, FAILED or
        UNREACHABLE); None if it was no longer pending."""
        message = await self._pending_message(message_id)
        if message is not None:
            message.attempts += 1
            message.outcome, message.finished_at, message.park_cause = PARKED, utcnow(), cause
            message.parked_reason, message.last_error = reason[:500], error[:500]
            message.peer_status, message.problem_title = status, _title(title)
            await self._session.flush()
        return message

    async def parked(self, peer: int | None = None) -> list[PeerMessage]:
        query = select(PeerMessage).where(PeerMessage.outcome == PARKED)
        if peer is not None:
            query = query.where(PeerMessage.peer == peer)
        return list(await self._session.scalars(query.order_by(PeerMessage.id)))

    async def revive_unreachable(self, peer: int) -> int:
        """Messages parked because ``peer`` could not be reached through every retry become
        pending again, due now; how many. It answers again, and they were never refused."""
        messages = list(await self._session.scalars(
            select(PeerMessage).where(PeerMessage.peer == peer, PeerMessage.outcome == PARKED,
                                      PeerMessage.park_cause == UNREACHABLE)))
        for message in messages:
            _unpark(message)
        await self._session.flush()
        return len(messages)

    async def _parked_message(self, message_id: int) -> PeerMessage:
        message = await self._session.get(PeerMessage, message_id)
        if message is None:
            raise NotFoundError(f"outbox message {message_id} not found")
        if message.outcome != PARKED:
            raise ConflictError(f"outbox message {message_id} is "
                                f"{message.outcome or PENDING}, not parked")
        return message

    async def replay(self, message_id: int) -> PeerMessage:
        """A parked message becomes pending again, due now, its attempts counted afresh."""
        message = await self._parked_message(message_id)
        _unpark(message)
        await self._session.flush()
        return message

    async def drop(self, message_id: int) -> PeerMessage:
        """A parked message is given up on for good (kept, as ``dropped``)."""
        message = await self._parked_message(message_id)
        message.outcome, message.finished_at = DROPPED, utcnow()
        await self._session.flush()
        return message


def _unpark(message: PeerMessage) -> None:
    message.outcome, message.finished_at = None, None
    message.parked_reason, message.park_cause = None, None
    message.attempts, message.next_attempt_at = 0, utcnow()


def _title(title: str | None) -> str | None:
    return None if title is None else title[:200]
