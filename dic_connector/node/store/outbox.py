"""The peer outbox: control messages this node owes the other two nodes.

The transactional outbox pattern (Richardson, *Microservices Patterns*, 2018, ch. 3): a
handler that accepts a request, stores an approval or erases a dataset also enqueues, *in the
same transaction*, one message per peer announcing it. Either both commit or neither does, so
a peer can never miss a change this node made (it is retried until delivered) nor hear of a
change that was rolled back. The replicator
(:mod:`dic_connector.node.coordination.replication`) delivers pending messages per peer in ``id``
order, because order matters (a request before its approvals).

A message ends ``delivered`` (the peer stored it, or already had it: peer endpoints are
idempotent) or ``refused`` (the peer's own verification said no: it is not retried, and the
refusal is audited by the replicator).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.node.store.base import utcnow
from dic_connector.node.store.models import PeerMessage

DELIVERED = "delivered"
REFUSED = "refused"


class OutboxRepository:
    """Enqueue, fetch and settle peer messages."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def enqueue(self, peers: list[int], kind: str, method: str, path: str,
                      body: dict[str, Any]) -> None:
        """One message per peer; delivered after this transaction commits."""
        for peer in peers:
            self._session.add(PeerMessage(peer=peer, kind=kind, method=method, path=path,
                                          body=body, attempts=0, next_attempt_at=utcnow()))
        await self._session.flush()

    async def head(self, peer: int) -> PeerMessage | None:
        """The oldest pending message for ``peer`` (delivery is in order)."""
        return await self._session.scalar(
            select(PeerMessage).where(PeerMessage.peer == peer, PeerMessage.outcome.is_(None))
            .order_by(PeerMessage.id).limit(1))

    async def pending(self, peer: int) -> int:
        return int(await self._session.scalar(
            select(func.count()).select_from(PeerMessage)
            .where(PeerMessage.peer == peer, PeerMessage.outcome.is_(None))) or 0)

    async def settle(self, message_id: int, outcome: str, error: str | None = None) -> None:
        message = await self._session.get(PeerMessage, message_id)
        if message is not None:
            message.outcome, message.finished_at = outcome, utcnow()
            message.last_error = None if error is None else error[:500]
            message.attempts += 1
            await self._session.flush()

    async def retry_later(self, message_id: int, error: str, delay: dt.timedelta) -> None:
        message = await self._session.get(PeerMessage, message_id)
        if message is not None:
            message.attempts += 1
            message.last_error = error[:500]
            message.next_attempt_at = utcnow() + delay
            await self._session.flush()
