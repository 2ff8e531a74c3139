"""The periodic exchange of audit chain heads: peers witness each other's log, request or not.

Each node's audit chain (:mod:`dic_connector.node.store.audit`) shows any change *inside*
the log, but not a cut at its end, nor a consistent rewrite of its newest entries by someone
holding the database: the chain of what is left still verifies. The heads the three nodes
write into ``compute.start`` catch that for a computed request, but only when someone later
compares them. This exchange closes the gap without a request: every
``audit_exchange_interval_s`` (default 60 s) each node asks both peers, over the mutual-TLS
peer API (``POST /v1/peer/audit/head``),

    "here is the head ``(seq, hash)`` of yours I recorded last: what is your head now,
    which hash does your chain hold at that ``seq``, and is it intact from there on?"

The peer answers from :meth:`~dic_connector.node.store.audit.AuditLog.holds`: one lookup and
the entries written since (never the whole log, so the minute's question stays cheap on a
large log: 21 ms for 60 new entries where the whole chain of 20,000 takes 2.9 s on SQLite;
a first question, from genesis, walks a long log in steps of ``HOLDS_MAX_ENTRIES``, one per
interval, each answered with the last entry verified). The asking node then decides
for itself (:func:`mismatch`), trusting only the reported numbers:

- the peer's head ``seq`` is below the recorded one: its newest entries were deleted;
- its hash at the recorded ``seq`` differs: entries up to there were rewritten (a hash
  commits to every entry before it, so a rewrite anywhere below shows here);
- its chain from the recorded head on does not verify: an entry after it was changed.

A mismatch is recorded here (``peer_audit_mismatches``, an ``audit.peer_mismatch`` entry in
this node's own chain with the recorded and reported heads), counted in ``/metrics``
(``dic_peer_audit_mismatches_total{peer}``), shown by ``/ready`` as ``degraded``, and makes
this node refuse every plan (:func:`~.verify.check_peer_audits`: all three nodes take part in
every computation, so every plan involves the peer) until an operator has looked and
acknowledged it (``dic admin audit acknowledge <peer>``, audited). Either way the reported
head becomes the recorded one, so the next exchange checks the log as it is now and one
incident is flagged once. A peer that cannot be reached or answers out of schema is no
mismatch: it is counted apart (``dic_peer_audit_unreachable_total{peer}``) and asked again at
the next interval with the same recorded head.

A node restored from a backup older than its peers' records shows the same way, on purpose:
its log lost entries the peers saw, and an operator should say so before it computes again.
A forged head planted in the observer's own table can only make the observer refuse work,
never accept a shortened log.

What this does not catch: a node whose own software lies (it can answer anything; the
design's trust model has each node check the others' *signatures*, never take their word for
their logs), and entries written and removed between two exchanges (an interval bounds the
window; a ``compute.start`` entry also records all three heads at each agreement). The
construction is the "trusted party holding the latest hash" of Schneier & Kelsey (ACM
TISSEC 2(2), 1999, §4) with the two peers as that party, and the auditor's consistency check
of Crosby & Wallach (USENIX Security 2009, §2.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.audit import GENESIS_HASH, ChainHead
from dic_connector.node.store.unit_of_work import Store

#: The peer route answering the question.
HEAD_PATH = "/v1/peer/audit/head"
log = logging.getLogger("dic_connector.node.coordination.exchange")


@dataclass(frozen=True)
class Report:
    """A peer's answer about the head recorded for it."""

    head: ChainHead
    #: what its chain holds at the recorded seq (None: no entry there)
    hash_at: str | None
    chain_ok: bool
    reason: str

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Report:
        """The answer as the peer route sends it; ValueError if it is not that shape."""
        try:
            head = body["head"]
            report = cls(ChainHead(int(head["seq"]), str(head["hash"])),
                         None if body["hash_at_seq"] is None else str(body["hash_at_seq"]),
                         bool(body["chain_ok"]), str(body.get("reason", ""))[:300])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed audit head answer: {exc!r}") from None
        if report.head.seq < 0 or len(report.head.hash) != 64:
            raise ValueError("malformed audit head answer: bad head")
        return report


def mismatch(recorded: ChainHead, report: Report) -> str | None:
    """Why ``report`` shows the peer's log no longer holds ``recorded``, or None if it does."""
    if report.head.seq < recorded.seq:
        return (f"head is entry {report.head.seq}, below entry {recorded.seq} recorded "
                "earlier: newest entries deleted (log truncated)")
    if report.hash_at != recorded.hash:
        found = "no entry" if report.hash_at is None else f"hash {report.hash_at[:16]}..."
        return (f"entry {recorded.seq} recorded earlier with hash {recorded.hash[:16]}... "
                f"now has {found}: log rewritten")
    if not report.chain_ok:
        return f"chain broken after entry {recorded.seq}: {report.reason}"
    return None


@dataclass
class PeerState:
    """What this process knows of one peer's exchanges (the database has the heads)."""

    #: exchanges that reached the peer and were evaluated
    exchanges: int = 0
    #: exchanges that did not reach the peer, or got an answer out of schema
    unreachable: int = 0
    last_error: str = ""
    #: mismatches detected by this process (the database counts every one ever)
    mismatches: int = 0


@dataclass
class AuditExchange:
    """Ask both peers every ``audit_exchange_interval_s`` (see the module docstring)."""

    store: Store
    config: NodeConfig
    client: PeerClient
    stopping: asyncio.Event
    peers: dict[str, PeerState] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for peer in self.client.others:
            self.peers[self.client.name(peer)] = PeerState()

    async def run(self) -> None:
        """Exchange with both peers now and then every interval, until ``stopping``."""
        while not self.stopping.is_set():
            try:
                await self.exchange_all()
            except Exception:  # keep witnessing; the log says why
                log.exception("audit head exchange failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(),
                                       self.config.audit_exchange_interval_s)

    async def exchange_all(self) -> dict[str, str | None]:
        """One exchange with each peer at once; per peer the mismatch found (None: none, or
        not reached: see :attr:`peers`)."""
        names = [self.client.name(p) for p in self.client.others]
        found = await asyncio.gather(*(self.exchange(p) for p in self.client.others))
        return dict(zip(names, found, strict=True))

    async def exchange(self, peer: int) -> str | None:
        """Ask ``peer`` about the head recorded for it; record the answer; the mismatch."""
        name, me = self.client.name(peer), self.config.node_id
        state = self.peers[name]
        async with self.store.reading() as uow:
            observed = await uow.peer_audit.recorded(name)
        recorded = ChainHead(0, GENESIS_HASH) if observed is None else observed.head
        try:
            answer = await self.client.call(peer, "POST", HEAD_PATH,
                                            {"seq": recorded.seq, "hash": recorded.hash})
            report = Report.from_json(answer)
        except (PeerUnavailable, PeerRefused, ValueError) as exc:
            state.unreachable += 1
            state.last_error = str(exc)[:300]
            log.debug("audit head exchange with %s: %s", name, exc)
            return None
        state.exchanges += 1
        state.last_error = ""
        reason = mismatch(recorded, report)
        async with self.store.unit_of_work() as uow:
            if reason is not None:
                await uow.peer_audit.flag(name, recorded, report.head, report.hash_at, reason)
                await uow.audit.append(f"node:{me}", "audit.peer_mismatch", f"node:{name}", {
                    "peer": name, "recorded_seq": recorded.seq, "recorded_hash": recorded.hash,
                    "reported_seq": report.head.seq, "reported_hash": report.head.hash,
                    "hash_at_recorded_seq": report.hash_at, "reason": reason})
            await uow.peer_audit.record(name, report.head)
        if reason is not None:
            state.mismatches += 1
            log.error("%s: audit log of %s no longer holds the head recorded here: %s",
                      me, name, reason)
        return reason
