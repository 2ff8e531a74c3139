"""Replication of the peer outbox: bounded retries with backoff, dead letters (parked) an
admin replays or drops, no head-of-line blocking, and idle loops woken by the commits that
enqueue instead of polling."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dic_connector.errors import ConflictError, PeerRefused, PeerUnavailable
from dic_connector.node import admin
from dic_connector.node.config import NodeConfig, PeerConfig, parse_config
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.coordination.replication import IDLE_POLL_S, Replicator, backoff
from dic_connector.node.store.models import PeerMessage
from dic_connector.node.store.outbox import DELIVERED, DROPPED, PARKED
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring, write_keyring
from dic_connector.vocabulary import RequestStatus
from tests.conftest import migrated_sqlite

from .conftest import close_cluster, cohort, make_cluster
from .support import submitted_request


class ScriptedPeers(PeerClient):
    """Node 0's view of two peers that answer each path as the test scripts it."""

    def __init__(self, answers: dict[str, Exception]) -> None:
        self.me = 0
        self.peers = tuple(
            PeerConfig(f"https://127.0.0.1:{9000 + i}", "127.0.0.1", 1, f"node-{i}")
            for i in range(3)
        )
        self.answers = answers
        self.calls: list[str] = []

    async def call(
        self, peer: int, method: str, path: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        self.calls.append(path)
        answer = self.answers.get(path)
        if answer is not None:
            raise answer
        return {}


@pytest.fixture
async def node0(tmp_path: Path) -> AsyncIterator[tuple[Store, NodeConfig]]:
    url = await migrated_sqlite(tmp_path / "node.db")
    keyring = NodeKeyring.generate("node-0")
    write_keyring(tmp_path / "keyring.json", keyring)
    config = replace(
        parse_config(
            {
                "node_index": 0,
                "database_url": url,
                "keyring_file": str(tmp_path / "keyring.json"),
                "replication_max_attempts": 3,
                "replication_backoff_s": 0.001,
                "replication_backoff_max_s": 0.002,
            }
        ),
        peers=ScriptedPeers({}).peers,
    )
    store = Store.open(url, keyring)
    try:
        yield store, config
    finally:
        await store.close()


async def _enqueue(store: Store, *paths: str, kind: str = "cancel") -> None:
    async with store.unit_of_work() as uow:
        for path in paths:
            await uow.outbox.enqueue([1], kind, "POST", path, {"reason": "test"})


async def _messages(store: Store) -> dict[str, PeerMessage]:
    async with store.unit_of_work() as uow:
        rows = await uow.session.scalars(select(PeerMessage).order_by(PeerMessage.id))
        return {m.path: m for m in rows}


async def _passes(replicator: Replicator, n: int) -> None:
    for _ in range(n):
        await replicator.deliver_due(1)
        await asyncio.sleep(0.01)  # the (tiny) backoff elapses


def test_backoff_doubles_up_to_the_cap_with_equal_jitter() -> None:
    rng = random.Random(7)
    delays = [backoff(n, 0.5, 30.0, rng).total_seconds() for n in range(1, 10)]
    ceilings = [min(30.0, 0.5 * 2 ** (n - 1)) for n in range(1, 10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lockstep


async def test_a_404_is_retried_without_holding_up_later_messages_then_parked(
    node0: tuple[Store, NodeConfig],
) -> None:
    store, config = node0
    poison = PeerRefused("node-1 refused POST /x: 404 request not found", 404, "Not Found")
    peers = ScriptedPeers({"/poison": poison})
    await _enqueue(store, "/poison", "/a", "/b")
    replicator = Replicator(store, config, peers, asyncio.Event())
    assert await replicator.deliver_due(1)
    assert peers.calls == ["/poison", "/a", "/b"]  # the later ones went through at once
    messages = await _messages(store)
    assert [messages[p].outcome for p in ("/a", "/b")] == [DELIVERED, DELIVERED]
    assert (messages["/poison"].outcome, messages["/poison"].attempts) == (None, 1)

    await _passes(replicator, 4)
    parked = (await _messages(store))["/poison"]
    assert peers.calls.count("/poison") == 3  # replication_max_attempts, then no more
    assert (parked.outcome, parked.peer_status, parked.problem_title) == (PARKED, 404, "Not Found")
    assert parked.parked_reason == "no delivery after 3 attempts"
    async with store.unit_of_work() as uow:
        assert [e.action for e in await uow.audit.entries()][-1] == "peer.parked"


async def test_other_4xx_are_parked_at_once_and_a_refused_request_fails_here(
    node0: tuple[Store, NodeConfig],
) -> None:
    store, config = node0
    request_id = await submitted_request(store)
    relay = f"/v1/peer/requests/{request_id}"
    peers = ScriptedPeers(
        {
            "/approval": PeerRefused("node-1 refused: 403 signature", 403, "Forbidden"),
            relay: PeerRefused("node-1 refused: 422 bad", 422, "Unprocessable Content"),
        }
    )
    await _enqueue(store, "/approval")
    await _enqueue(store, relay, kind="request")
    await Replicator(store, config, peers, asyncio.Event()).deliver_due(1)
    messages = await _messages(store)
    assert [(m.outcome, m.attempts, m.peer_status, m.parked_reason) for m in messages.values()] == [
        (PARKED, 1, 403, "refused by node-1: 403 Forbidden"),
        (PARKED, 1, 422, "refused by node-1: 422 Unprocessable Content"),
    ]
    async with store.unit_of_work() as uow:
        req = await uow.requests.get(request_id)
        actions = [e.action for e in await uow.audit.entries()]
    assert req.status is RequestStatus.FAILED and "422" in (req.status_reason or "")
    assert actions.count("peer.refused") == 2


async def test_an_unreachable_peer_ends_the_pass_a_5xx_or_a_timeout_does_not(
    node0: tuple[Store, NodeConfig],
) -> None:
    store, config = node0
    peers = ScriptedPeers(
        {
            "/down": PeerUnavailable("node-1 unreachable (ClientConnectorError)", connected=False),
            "/crash": PeerUnavailable("node-1 failed: 500", 500),
            "/slow": PeerUnavailable("node-1 unreachable (TimeoutError)"),
        }
    )
    await _enqueue(store, "/crash", "/slow", "/a", "/down", "/b")
    replicator = Replicator(store, config, peers, asyncio.Event())
    await replicator.deliver_due(1)
    assert peers.calls == ["/crash", "/slow", "/a", "/down"]  # "/b" waits for the next pass
    peers.answers.pop("/down")
    await _passes(replicator, 4)
    messages = await _messages(store)
    assert {p: (m.outcome, m.park_cause) for p, m in messages.items()} == {
        "/crash": (PARKED, "failed"),
        "/slow": (PARKED, "failed"),
        "/a": (DELIVERED, None),
        "/down": (DELIVERED, None),
        "/b": (DELIVERED, None),
    }
    assert (messages["/crash"].peer_status, messages["/slow"].peer_status) == (500, None)


async def test_messages_parked_unanswered_come_back_when_the_peer_answers_again(
    node0: tuple[Store, NodeConfig],
) -> None:
    """A peer down through every retry: its messages are parked, then revived once its
    ``/live`` answers, though nothing new is sent to it; a refused one stays parked."""
    store, config = node0
    down = PeerUnavailable("node-1 unreachable (ClientConnectorError)", connected=False)
    peers = ScriptedPeers(
        {"/a": down, "/b": down, "/no": PeerRefused("node-1 refused: 409", 409, "Conflict")}
    )
    await _enqueue(store, "/a", "/b", "/no")
    replicator = Replicator(store, config, peers, asyncio.Event())
    for _ in range(12):
        await replicator.deliver_due(1)
        await asyncio.sleep(0.01)
        if "/no" in peers.calls:  # reached once "/a" and "/b" stopped ending the pass
            break
    messages = await _messages(store)
    assert {p: (m.outcome, m.peer_status) for p, m in messages.items()} == {
        "/a": (PARKED, None),
        "/b": (PARKED, None),
        "/no": (PARKED, 409),
    }

    peers.answers = {"/no": peers.answers["/no"]}  # node-1 is back; nothing new to send
    await _passes(replicator, 2)
    messages = await _messages(store)
    assert {p: m.outcome for p, m in messages.items()} == {
        "/a": DELIVERED,
        "/b": DELIVERED,
        "/no": PARKED,
    }
    assert peers.calls.count("/no") == 1 and "/live" in peers.calls  # asked if it is back
    async with store.unit_of_work() as uow:
        assert "outbox.revive" in [e.action for e in await uow.audit.entries()]


async def test_admin_lists_replays_and_drops_parked_messages(
    node0: tuple[Store, NodeConfig],
) -> None:
    store, config = node0
    peers = ScriptedPeers(
        {
            "/late": PeerRefused("node-1 refused: 409", 409, "Conflict"),
            "/bad": PeerRefused("node-1 refused: 400", 400, "Bad Request"),
        }
    )
    await _enqueue(store, "/late", "/bad")
    replicator = Replicator(store, config, peers, asyncio.Event())
    await replicator.deliver_due(1)
    listed = await admin.parked_messages(config)
    assert [(m.path, m.peer, m.peer_status, m.problem_title) for m in listed] == [
        ("/late", "node-1", 409, "Conflict"),
        ("/bad", "node-1", 400, "Bad Request"),
    ]
    assert "status 409 Conflict" in listed[0].describe()
    late, bad = (m.id for m in listed)
    with pytest.raises(ConflictError, match="not parked"):  # nothing changes
        await admin.settle_parked(config, "replay", [late, late])

    peers.answers.pop("/late")  # what it needed has arrived
    assert await admin.settle_parked(config, "replay", [late]) == [late]
    await admin.settle_parked(config, "drop", [bad])
    await replicator.deliver_due(1)
    messages = await _messages(store)
    assert (messages["/late"].outcome, messages["/late"].attempts) == (DELIVERED, 1)
    assert messages["/bad"].outcome == DROPPED and peers.calls.count("/bad") == 1
    assert await admin.parked_messages(config) == []
    async with store.unit_of_work() as uow:
        actions = [e.action for e in await uow.audit.entries()]
    assert actions[-2:] == ["outbox.replay", "outbox.drop"]


def _gauge(metrics: str, peer: str, state: str) -> float:
    match = re.search(
        rf'^dic_peer_outbox_messages\{{peer="{peer}",state="{state}"\}} (\S+)$',
        metrics,
        re.MULTILINE,
    )
    assert match is not None, metrics[-2000:]
    return float(match.group(1))


async def test_a_poisoned_message_does_not_delay_the_next_request_and_status_converges(
    tmp_path: Path,
) -> None:
    """Node 0 owes node-1 a cancel for a request node-1 never saw (404 every time). A
    request submitted after it still reaches node-1 at once and completes on all three
    nodes; the poison is retried, parked, counted in /metrics and dropped by the admin."""
    cluster = await make_cluster(tmp_path, replication_max_attempts=4, replication_backoff_s=0.1)
    try:
        await cluster.upload("tm", cohort(20, seed=11))
        poison = f"/v1/peer/requests/{uuid.uuid4()}/cancel"
        async with cluster.stores[0].unit_of_work() as uow:
            await uow.outbox.enqueue([1], "cancel", "POST", poison, {"reason": "poison"})
        request_id = await cluster.approved_count(0, 0)
        results = await cluster.completed_everywhere(request_id)  # 30 s at most, not 3600
        assert [r["n"] for r in results] == [20, 20, 20]

        config = cluster.configs[0]
        for _ in range(200):
            parked = await admin.parked_messages(config)
            if parked:
                break
            await asyncio.sleep(0.05)
        assert [(m.path, m.peer, m.peer_status, m.attempts) for m in parked] == [
            (poison, "node-1", 404, 4)
        ]
        url = config.peers[0].api_url
        async with cluster.http.get(
            f"{url}/metrics", ssl=cluster.deployment.ca_context, server_hostname="node-0"
        ) as response:
            metrics = await response.text()
        assert _gauge(metrics, "node-1", "parked") == 1
        assert _gauge(metrics, "node-2", "parked") == 0
        await admin.settle_parked(config, "drop", [parked[0].id])
        assert await admin.parked_messages(config) == []
    finally:
        await close_cluster(cluster)


async def test_an_idle_loop_is_woken_by_a_commit_that_enqueues_else_sleeps_until_due(
    node0: tuple[Store, NodeConfig],
) -> None:
    store, config = node0
    config = replace(config, coordination_interval_s=0.05)
    peers = ScriptedPeers({})
    replicator = Replicator(store, config, peers, asyncio.Event())
    assert await replicator.deliver_due(1) is False  # nothing due: /live asked, it answers
    assert peers.calls == ["/live"]
    assert replicator.idle_wait_s(1) == config.coordination_interval_s  # was unreachable
    assert await replicator.deliver_due(1) is False
    assert replicator.idle_wait_s(1) == IDLE_POLL_S  # empty outbox: no polling
    event = replicator._wake[1]
    async with store.unit_of_work() as uow:  # a commit that enqueues nothing: no wake
        await uow.requests.all()
    assert not event.is_set()
    with pytest.raises(RuntimeError):  # an enqueue rolled back: no wake
        async with store.unit_of_work() as uow:
            await uow.outbox.enqueue([1], "cancel", "POST", "/rolled-back", {})
            raise RuntimeError("abort")
    assert not event.is_set()
    await _enqueue(store, "/later")
    assert event.is_set()  # woken after the commit
    event.clear()
    later = (await _messages(store))["/later"]
    async with store.unit_of_work() as uow:
        await uow.outbox.retry_later(later.id, "503", dt.timedelta(seconds=0.4))
    assert await replicator.deliver_due(1) is False  # pending, not due yet
    assert config.coordination_interval_s <= replicator.idle_wait_s(1) <= 0.4
    await asyncio.sleep(0.45)
    assert await replicator.deliver_due(1)  # due now: delivered
    assert peers.calls == ["/live", "/later"]
    assert (await _messages(store))["/later"].outcome == DELIVERED


async def test_a_peer_unreachable_at_its_probe_is_not_polled_every_interval_until_the_next(
    node0: tuple[Store, NodeConfig],
) -> None:
    """A peer that took no connection when probed (a node started before its peers): with
    nothing due, the loop sleeps until the next probe may ask it (at most IDLE_POLL_S),
    not the coordination interval (a read of the outbox every 50 ms, for nothing)."""
    store, config = node0
    config = replace(config, coordination_interval_s=0.05, replication_backoff_max_s=60.0)
    peers = ScriptedPeers({"/live": PeerUnavailable("node-1 unreachable", connected=False)})
    replicator = Replicator(store, config, peers, asyncio.Event())
    assert await replicator.deliver_due(1) is False  # probed: no connection
    assert peers.calls == ["/live"]
    assert await replicator.deliver_due(1) is False  # the next probe is 60 s away
    assert peers.calls == ["/live"]
    assert replicator.idle_wait_s(1) == IDLE_POLL_S
    await _enqueue(store, "/now")  # a message due is still tried at once
    assert await replicator.deliver_due(1)  # delivered: the peer answers again
    assert peers.calls == ["/live", "/now"]
