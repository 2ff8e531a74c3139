"""Delivering the peer outbox: every change announced to both peers, each message on its own.

One loop per peer takes the messages that are due (:mod:`dic_connector.node.store.outbox`),
oldest first, calls the peer for each and settles it:

- **2xx**: ``delivered`` (peer endpoints are idempotent, so a message delivered twice after
  a crash between call and settle changes nothing);
- **404**: retried like an unreachable peer, since an approval relayed by one node can
  overtake the request relayed by another and must wait for it;
- **any other 4xx**: parked at once with the status and problem title (the peer's own
  verification said no, asking again cannot help); audited as ``peer.refused``, and a
  refused ``request`` fails here, since it can never run with that peer;
- **5xx or unreachable**: retried after an exponential backoff with jitter
  (``replication_backoff_s`` doubling up to ``replication_backoff_max_s``, half of it
  random: "equal jitter", Brooker, "Exponential Backoff And Jitter", AWS Architecture
  Blog, 2015), and parked after ``replication_max_attempts`` (audited as
  ``peer.parked``).

A message that fails waits for its own next attempt and never holds up the others (no
head-of-line blocking): the peer sees later messages at once, and a message it cannot take
yet (the approval before its request) comes back after its backoff. Only a peer that takes no
connection ends the pass early (the messages behind would fail the same way); a timeout
does not, since it may be that one message's. Messages parked because no connection could
be made through every retry are revived as soon as the peer answers again (a delivery, or
its ``/live`` asked when nothing else is due), so a long outage still converges on its own;
what a peer refused, failed on or timed out on stays parked.
A loop with nothing due does not poll: a commit of this node that enqueues wakes it
(:attr:`~dic_connector.node.store.unit_of_work.Store.on_outbox`), and otherwise it looks
again when the earliest pending message is due, at most every :data:`IDLE_POLL_S`.
An admin replays or drops parked messages (:mod:`dic_connector.node.admin`); ``/metrics``
shows how many are pending and parked per peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.outbox import FAILED, REFUSED, UNREACHABLE
from dic_connector.node.store.unit_of_work import Store, UnitOfWork
from dic_connector.vocabulary import RequestStatus

#: Messages read per pass over one peer's due messages.
BATCH = 100
#: The longest an idle delivery loop sleeps unless woken (seconds; or the coordination
#: interval, if longer). A commit of this process that enqueues wakes it at once; this bounds
#: the delay of a message another process made pending (an admin's replay).
IDLE_POLL_S = 1.0
log = logging.getLogger("dic_connector.node.coordination")


async def announce(uow: UnitOfWork, config: NodeConfig, kind: str, method: str, path: str,
                   body: dict[str, Any]) -> None:
    """Enqueue a message to both peers in the caller's transaction (no-op when standalone)."""
    if config.coordinated:
        peers = [i for i in range(3) if i != config.node_index]
        await uow.outbox.enqueue(peers, kind, method, path, body)


def backoff(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> dt.timedelta:
    """The wait after failed attempt ``attempt`` (from 1): half of min(cap, base * 2^(n-1))
    fixed, the other half uniformly random ("equal jitter")."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 32))
    return dt.timedelta(seconds=ceiling / 2 + rng.uniform(0.0, ceiling / 2))


class Attempt(Enum):
    """How one delivery attempt ended."""

    #: Delivered or parked: nothing more to do for this message.
    SETTLED = "settled"
    #: It waits for its next attempt.
    RETRY = "retry"
    #: No connection could be made: the rest of this pass would fail the same way.
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class _Message:
    """What one attempt needs, read in a transaction of its own."""

    id: int
    kind: str
    method: str
    path: str
    body: dict[str, Any]
    attempts: int


class Replicator:
    """Delivers this node's outbox to its two peers."""

    def __init__(self, store: Store, config: NodeConfig, client: PeerClient,
                 stopping: asyncio.Event, rng: random.Random | None = None) -> None:
        self._store = store
        self._config = config
        self._client = client
        self._stopping = stopping
        self._rng = rng or random.Random()
        self._wake = {peer: asyncio.Event() for peer in client.others}
        #: Peers that may have messages parked unreachable (True at start: from before).
        self._unreachable = {peer: True for peer in client.others}
        #: When (event loop time) an idle pass may next ask such a peer whether it is back.
        self._next_probe = {peer: 0.0 for peer in client.others}
        #: How long the loop sleeps after a pass that settled nothing, unless woken
        #: (set by each pass: :meth:`idle_wait_s`).
        self._idle_s = {peer: config.coordination_interval_s for peer in client.others}
        store.on_outbox = self.wake  # a commit that enqueued wakes the loops at once
        #: told after each message delivered (the coordinator's loop: a request it left
        #: until its replication settled may be prepared now)
        self.on_delivered: Callable[[], None] | None = None

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(peer) for peer in self._client.others))

    async def _loop(self, peer: int) -> None:
        """Deliver until the node stops (between messages, never inside a transaction)."""
        while not self._stopping.is_set():
            try:
                progressed = await self.deliver_due(peer)
            except Exception:  # keep delivering; the log says why
                log.exception("outbox delivery to %s failed", self._client.name(peer))
                progressed = False
            if not progressed:
                event = self._wake[peer]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self.idle_wait_s(peer))
                event.clear()

    def idle_wait_s(self, peer: int) -> float:
        """How long the loop for ``peer`` sleeps after a pass that settled nothing, unless
        woken: the coordination interval while messages are due (retried), else until the
        earliest pending message is due or, for a peer that may be unreachable, its next
        probe (at most one per ``replication_backoff_max_s``: polling the empty outbox
        every interval until then was a read transaction every 50 ms on a node whose
        first probe came before its peers were up), at most :data:`IDLE_POLL_S` (a message
        another process enqueued, e.g. ``dic admin outbox replay``, wakes no loop here) and
        never less than the interval."""
        return self._idle_s[peer]

    async def deliver_due(self, peer: int) -> bool:
        """One pass over ``peer``'s due messages, oldest first; True if any was settled."""
        interval = self._config.coordination_interval_s
        async with self._store.reading() as uow:
            due = [_Message(m.id, m.kind, m.method, m.path, dict(m.body), m.attempts)
                   for m in await uow.outbox.due(peer, BATCH)]
            self._idle_s[peer] = interval
            if not due:
                wait = max(interval, IDLE_POLL_S)
                next_due = await uow.outbox.next_due(peer)
                if next_due is not None:
                    wait = min(wait, (next_due - utcnow()).total_seconds())
                if self._unreachable[peer]:  # until the next probe may ask it
                    wait = min(wait, self._next_probe[peer]
                               - asyncio.get_running_loop().time())
                self._idle_s[peer] = max(interval, wait)
        if not due and self._unreachable[peer]:
            return await self._probe(peer)
        settled = False
        for message in due:
            if self._stopping.is_set():
                break
            outcome = await self.attempt(peer, message)
            settled = settled or outcome is Attempt.SETTLED
            if outcome is Attempt.UNREACHABLE:
                break
        return settled

    async def attempt(self, peer: int, message: _Message) -> Attempt:
        """Call ``peer`` with ``message`` once and settle what its answer means."""
        attempt = message.attempts + 1
        try:
            await self._client.call(peer, message.method, message.path, message.body)
        except PeerUnavailable as exc:
            cause = FAILED if exc.connected else UNREACHABLE
            await self._retry_or_park(peer, message, cause, str(exc), exc.status, None)
            return Attempt.RETRY if exc.connected else Attempt.UNREACHABLE
        except PeerRefused as exc:
            if exc.status == 404:  # what it refers to has not reached the peer yet
                parked = await self._retry_or_park(peer, message, FAILED, str(exc), 404,
                                                   exc.title)
                return Attempt.SETTLED if parked else Attempt.RETRY
            await self._refused(peer, message, exc)
            return Attempt.SETTLED
        async with self._store.unit_of_work() as uow:
            await uow.outbox.delivered(message.id)
        log.debug("delivered outbox message %d to %s (attempt %d)", message.id,
                  self._client.name(peer), attempt)
        if self._unreachable[peer]:
            await self._revive(peer)
        if self.on_delivered is not None:
            self.on_delivered()
        return Attempt.SETTLED

    async def _probe(self, peer: int) -> bool:
        """Nothing is due but messages may be parked unreachable: ask the peer's ``/live``
        (at most once per ``replication_backoff_max_s``) and revive them if it answers."""
        now = asyncio.get_running_loop().time()
        if now < self._next_probe[peer]:
            return False
        self._next_probe[peer] = now + self._config.replication_backoff_max_s
        try:
            await self._client.call(peer, "GET", "/live")
        except PeerUnavailable as exc:
            if not exc.connected:
                return False
        except PeerRefused:
            pass  # it answered
        return await self._revive(peer) > 0

    async def _revive(self, peer: int) -> int:
        """``peer`` answers: its messages parked unreachable are pending again."""
        async with self._store.unit_of_work() as uow:
            revived = await uow.outbox.revive_unreachable(peer)
            if revived:
                await uow.audit.append(f"node:{self._config.node_id}", "outbox.revive",
                                       f"peer:{self._client.name(peer)}", {"messages": revived})
        self._unreachable[peer] = False
        if revived:
            log.info("%s answers again: %d message(s) parked unreachable revived",
                     self._client.name(peer), revived)
        return revived

    async def _retry_or_park(self, peer: int, message: _Message, cause: str, error: str,
                             status: int | None, title: str | None) -> bool:
        """Retry after a backoff, or park once the attempts are used up; True if parked."""
        attempt = message.attempts + 1
        config = self._config
        async with self._store.unit_of_work() as uow:
            if attempt < config.replication_max_attempts:
                delay = backoff(attempt, config.replication_backoff_s,
                                config.replication_backoff_max_s, self._rng)
                await uow.outbox.retry_later(message.id, error, delay, status, title)
                return False
            reason = f"no delivery after {attempt} attempts"
            parked = await uow.outbox.park(message.id, cause, reason, error, status, title)
            self._unreachable[peer] = self._unreachable[peer] or cause == UNREACHABLE
            if parked is not None:
                await uow.audit.append(f"node:{config.node_id}", "peer.parked", message.path,
                                       {"peer": self._client.name(peer), "kind": message.kind,
                                        "message": message.id, "reason": reason})
        log.warning("outbox message %d to %s parked: %s", message.id,
                    self._client.name(peer), error[:300])
        return True

    async def _refused(self, peer: int, message: _Message, exc: PeerRefused) -> None:
        name = self._client.name(peer)
        reason = f"refused by {name}: {exc.status} {exc.title}".strip()
        async with self._store.unit_of_work() as uow:
            parked = await uow.outbox.park(message.id, REFUSED, reason, str(exc), exc.status,
                                           exc.title)
            if parked is None:  # dropped by an admin meanwhile
                return
            await uow.audit.append(f"node:{self._config.node_id}", "peer.refused",
                                   message.path, {"peer": name, "kind": message.kind,
                                                  "status": exc.status,
                                                  "message": message.id})
            if message.kind == "request":
                request_id = uuid.UUID(message.path.rstrip("/").rsplit("/", 1)[1])
                req = await uow.requests.find(request_id)
                if req is not None and req.status in (
                        RequestStatus.SUBMITTED, RequestStatus.AWAITING_APPROVAL,
                        RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES):
                    await uow.requests.set_status(request_id, RequestStatus.FAILED,
                                                  str(exc)[:500])
        log.warning("outbox message %d parked: %s", message.id, str(exc)[:300])
