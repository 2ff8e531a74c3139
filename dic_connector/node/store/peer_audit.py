"""The peers' audit chain heads as this node observed them, and the mismatches it detected.

A hash chain proves its own integrity but not its length: whoever holds a node's database
can delete the newest entries (say, the ``result.open`` of an opening) or rewrite them and
re-chain from there, and the node's own verification still passes. Only someone who saw the
chain earlier can tell (Schneier & Kelsey, *Secure audit logs to support computer
forensics*, ACM TISSEC 2(2), 1999, §4: "a trusted party that receives the latest hash";
Crosby & Wallach, *Efficient data structures for tamper-evident logging*, USENIX Security
2009, §2: auditors keep the commitments they received). Here the other two nodes are those
parties: each records every head ``(seq, hash)`` a peer reports
(:mod:`dic_connector.node.coordination.exchange`) and asks at the next exchange whether the
peer's chain still holds it.

- ``peer_audit_heads``: the newest observed head per peer, plus the last
  :data:`HEAD_HISTORY` distinct ones (a head reported again only moves ``observed_at``).
- ``peer_audit_mismatches``: a peer whose chain no longer held the recorded head, open
  until an operator acknowledges it (``dic admin audit acknowledge <peer>``). Rows are never
  deleted, so their count per peer is a monotonic counter for ``/metrics``.

Identifiers and hashes only; nothing here is data.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.node.store.audit import ChainHead
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.models import PeerAuditHead, PeerAuditMismatch

#: Distinct heads kept per peer (the newest is the one that matters; older ones are for the
#: operator reading when a peer's log went wrong).
HEAD_HISTORY = 100


@dataclass(frozen=True)
class ObservedHead:
    """A peer's head and when this node saw it first and last."""

    peer: str
    head: ChainHead
    first_seen_at: dt.datetime
    observed_at: dt.datetime


class PeerAuditRepository:
    """Record observed heads; flag, list and acknowledge mismatches."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def _newest(self, peer: str) -> PeerAuditHead | None:
        return await self._session.scalar(
            select(PeerAuditHead).where(PeerAuditHead.peer == peer)
            .order_by(PeerAuditHead.id.desc()).limit(1))

    async def recorded(self, peer: str) -> ObservedHead | None:
        """The newest head of ``peer`` this node recorded, None before the first exchange."""
        row = await self._newest(peer)
        return None if row is None else _observed(row)

    async def history(self, peer: str, limit: int = HEAD_HISTORY) -> list[ObservedHead]:
        """Recorded heads of ``peer``, newest first."""
        rows = await self._session.scalars(
            select(PeerAuditHead).where(PeerAuditHead.peer == peer)
            .order_by(PeerAuditHead.id.desc()).limit(limit))
        return [_observed(r) for r in rows]

    async def record(self, peer: str, head: ChainHead,
                     at: dt.datetime | None = None) -> ObservedHead:
        """``peer`` reported ``head`` now: a new row if it moved, else ``observed_at`` only;
        history beyond :data:`HEAD_HISTORY` rows is pruned."""
        now = at or utcnow()
        newest = await self._newest(peer)
        if newest is not None and (newest.seq, newest.hash) == (head.seq, head.hash):
            newest.observed_at = now
            await self._session.flush()
            return _observed(newest)
        row = PeerAuditHead(peer=peer, seq=head.seq, hash=head.hash, first_seen_at=now,
                            observed_at=now)
        self._session.add(row)
        await self._session.flush()
        oldest_kept = await self._session.scalar(
            select(PeerAuditHead.id).where(PeerAuditHead.peer == peer)
            .order_by(PeerAuditHead.id.desc()).offset(HEAD_HISTORY - 1).limit(1))
        if oldest_kept is not None:
            await self._session.execute(delete(PeerAuditHead).where(
                PeerAuditHead.peer == peer, PeerAuditHead.id < oldest_kept))
        return _observed(row)

    async def flag(self, peer: str, recorded: ChainHead, reported: ChainHead,
                   hash_at_recorded: str | None, reason: str) -> PeerAuditMismatch:
        """Record that ``peer``'s chain no longer holds ``recorded``; open until acknowledged."""
        mismatch = PeerAuditMismatch(
            peer=peer, recorded_seq=recorded.seq, recorded_hash=recorded.hash,
            reported_seq=reported.seq, reported_hash=reported.hash,
            hash_at_recorded=hash_at_recorded, reason=reason[:500])
        self._session.add(mismatch)
        await self._session.flush()
        return mismatch

    async def open_mismatches(self, peer: str | None = None) -> list[PeerAuditMismatch]:
        """Mismatches no operator has acknowledged yet, oldest first."""
        query = select(PeerAuditMismatch).where(PeerAuditMismatch.acknowledged_at.is_(None))
        if peer is not None:
            query = query.where(PeerAuditMismatch.peer == peer)
        return list(await self._session.scalars(query.order_by(PeerAuditMismatch.id)))

    async def flagged(self) -> list[str]:
        """The peers with an open mismatch, sorted."""
        rows = await self._session.scalars(
            select(PeerAuditMismatch.peer).where(PeerAuditMismatch.acknowledged_at.is_(None))
            .distinct())
        return sorted(rows)

    async def mismatch_counts(self) -> dict[str, int]:
        """Every mismatch ever detected, per peer (acknowledged ones included)."""
        rows = await self._session.execute(
            select(PeerAuditMismatch.peer, func.count()).group_by(PeerAuditMismatch.peer))
        return {str(peer): int(n) for peer, n in rows.all()}

    async def acknowledge(self, peer: str, by: str) -> list[PeerAuditMismatch]:
        """Close ``peer``'s open mismatches (an operator has looked); the ones closed."""
        now = utcnow()
        mismatches = await self.open_mismatches(peer)
        for mismatch in mismatches:
            mismatch.acknowledged_at, mismatch.acknowledged_by = now, by
        await self._session.flush()
        return mismatches


def _observed(row: PeerAuditHead) -> ObservedHead:
    return ObservedHead(row.peer, ChainHead(row.seq, row.hash), row.first_seen_at,
                        row.observed_at)
