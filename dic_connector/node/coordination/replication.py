"""Delivering the peer outbox: every change announced to both peers, in order, exactly once
in effect.

One loop per peer takes the oldest pending message (:mod:`dic_connector.node.store.outbox`),
calls the peer, and settles it: ``delivered`` on 2xx (peer endpoints are idempotent, so a
message delivered twice after a crash between call and settle changes nothing),
``refused`` on 4xx (the peer's own verification said no: audited, and a refused
``request`` fails the request here, since it can never run with that peer), or retried with
exponential backoff (0.5 s doubling to 30 s) when the peer is unreachable, and on 404 for
up to ``coordination_timeout_s``: an approval relayed by one node can overtake the request
relayed by another, and must wait for it. Later messages
wait behind a pending one, so a peer never sees an approval before its request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import uuid
from typing import Any

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.outbox import DELIVERED, REFUSED
from dic_connector.node.store.unit_of_work import Store, UnitOfWork
from dic_connector.vocabulary import RequestStatus

MAX_BACKOFF_S = 30.0
log = logging.getLogger("dic_connector.node.coordination")


async def announce(uow: UnitOfWork, config: NodeConfig, kind: str, method: str, path: str,
                   body: dict[str, Any]) -> None:
    """Enqueue a message to both peers in the caller's transaction (no-op when standalone)."""
    if config.coordinated:
        peers = [i for i in range(3) if i != config.node_index]
        await uow.outbox.enqueue(peers, kind, method, path, body)


def backoff(attempts: int) -> dt.timedelta:
    return dt.timedelta(seconds=min(MAX_BACKOFF_S, 0.5 * 2 ** min(attempts, 16)))


class Replicator:
    """Delivers this node's outbox to its two peers."""

    def __init__(self, store: Store, config: NodeConfig, client: PeerClient,
                 stopping: asyncio.Event) -> None:
        self._store = store
        self._config = config
        self._client = client
        self._stopping = stopping
        self._wake = {peer: asyncio.Event() for peer in client.others}

    def wake(self) -> None:
        for event in self._wake.values():
            event.set()

    async def run(self) -> None:
        await asyncio.gather(*(self._loop(peer) for peer in self._client.others))

    async def _loop(self, peer: int) -> None:
        """Deliver until the node stops (between messages, never inside a transaction)."""
        while not self._stopping.is_set():
            try:
                progressed = await self.deliver_one(peer)
            except Exception:  # keep delivering; the log says why
                log.exception("outbox delivery to %s failed", self._client.name(peer))
                progressed = False
            if not progressed:
                event = self._wake[peer]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), self._config.coordination_interval_s)
                event.clear()

    async def deliver_one(self, peer: int) -> bool:
        """Try the oldest pending message for ``peer``; True if it was settled."""
        async with self._store.reading() as uow:
            message = await uow.outbox.head(peer)
            if message is None or message.next_attempt_at > dt.datetime.now(dt.UTC):
                return False
            message_id, kind, method, path, body = (message.id, message.kind, message.method,
                                                    message.path, dict(message.body))
            attempts = message.attempts
            age = dt.datetime.now(dt.UTC) - message.created_at
        try:
            await self._client.call(peer, method, path, body)
        except PeerUnavailable as exc:
            async with self._store.unit_of_work() as uow:
                await uow.outbox.retry_later(message_id, str(exc), backoff(attempts))
            return False
        except PeerRefused as exc:
            if exc.status == 404 and age < dt.timedelta(
                    seconds=self._config.coordination_timeout_s):
                # the object it refers to has not reached the peer yet (another node's
                # outbox carries it): wait for it rather than give up
                async with self._store.unit_of_work() as uow:
                    await uow.outbox.retry_later(message_id, str(exc), backoff(attempts))
                return False
            await self._refused(message_id, peer, kind, path, exc)
            return True
        async with self._store.unit_of_work() as uow:
            await uow.outbox.settle(message_id, DELIVERED)
        return True

    async def _refused(self, message_id: int, peer: int, kind: str, path: str,
                       exc: PeerRefused) -> None:
        name = self._client.name(peer)
        async with self._store.unit_of_work() as uow:
            await uow.outbox.settle(message_id, REFUSED, str(exc))
            await uow.audit.append(f"node:{self._config.node_id}", "peer.refused", path,
                                   {"peer": name, "kind": kind, "status": exc.status})
            if kind == "request":
                request_id = uuid.UUID(path.rstrip("/").rsplit("/", 1)[1])
                req = await uow.requests.find(request_id)
                if req is not None and req.status in (
                        RequestStatus.SUBMITTED, RequestStatus.AWAITING_APPROVAL,
                        RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES):
                    await uow.requests.set_status(request_id, RequestStatus.FAILED,
                                                  str(exc)[:500])
