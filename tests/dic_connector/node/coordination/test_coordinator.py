"""The coordinator's status updates (a transition that lost a race is a logged no-op), its
retry steps, and how often a follower asks the coordinator."""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

import pytest

from dic_connector.node.config import parse_config
from dic_connector.node.coordination.coordinator import (
    FOLLOW_INTERVAL_S,
    FOLLOW_MAX_INTERVAL_S,
    IDLE_TICK_S,
    Coordination,
    RetrySoon,
)
from dic_connector.node.coordination.verify import STARTABLE
from dic_connector.node.store import migrate
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.canonical import canonical_json
from dic_connector.trust.keyring import NodeKeyring
from dic_connector.vocabulary import RequestStatus

from .support import submitted_request


async def test_waiting_after_a_start_won_the_race_is_a_debug_no_op(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-0"))
    try:
        request_id = await submitted_request(
            store, RequestStatus.APPROVED, RequestStatus.WAITING_FOR_NODES, RequestStatus.RUNNING)
        coordination = Coordination(store, parse_config({"node_index": 1, "database_url": url}))
        caplog.set_level(logging.DEBUG, logger="dic_connector.node.coordination")
        # the follower's tick read "waiting" from the coordinator; a start came first
        await coordination._set(request_id, RequestStatus.WAITING_FOR_NODES, "node-0: waiting")
        async with store.unit_of_work() as uow:
            req = await uow.requests.get(request_id)
        assert (req.status, req.status_reason) == (RequestStatus.RUNNING, "running")
        records = [r for r in caplog.records if r.name == "dic_connector.node.coordination"]
        assert [r.levelno for r in records] == [logging.DEBUG]
        assert "lost a race" in records[0].getMessage()
        assert all(r.exc_info is None for r in caplog.records)
        # a transition the machine allows still happens
        await coordination._set(request_id, RequestStatus.FAILED, "node-0: gone")
        async with store.unit_of_work() as uow:
            assert (await uow.requests.get(request_id)).status is RequestStatus.FAILED
    finally:
        await store.close()


def test_the_coordinator_retries_soon_while_a_request_waits_then_every_interval() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    retry = RetrySoon(1.0, (0.02, 0.05, 0.1))
    assert retry.delay(frozenset()) == 1.0  # nothing waiting: the interval
    assert [retry.delay(frozenset({a})) for _ in range(5)] == [0.02, 0.05, 0.1, 1.0, 1.0]
    assert retry.delay(frozenset({a, b})) == 0.02  # a new one waits: the steps again
    assert retry.delay(frozenset({b})) == 0.05  # one left: no new steps
    assert retry.delay(frozenset()) == 1.0
    assert retry.delay(frozenset({a})) == 0.02
    assert RetrySoon(0.01, (0.02,)).delay(frozenset({a})) == 0.01  # never above the interval
    assert RetrySoon(1.0, ()).delay(frozenset({a})) == 1.0  # followers: the interval


async def test_a_follower_asks_about_startable_requests_at_most_every_follow_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-1"))
    try:
        approved = await submitted_request(store, RequestStatus.APPROVED)
        async with store.unit_of_work() as uow:
            first = await uow.requests.get(approved)
            datasets = await uow.requests.dataset_ids(approved)
            done = await uow.requests.create(first.study_id, first.submitted_by, "count", "1",
                                             {}, datasets,
                                             canonical_json({"analysis": "count", "n": 2}))
            for status in (RequestStatus.APPROVED, RequestStatus.RUNNING,
                           RequestStatus.COMPLETED):
                await uow.requests.set_status(done.id, status, status.value)
        async with store.reading() as uow:
            assert [r.id for r in await uow.requests.all(statuses=STARTABLE)] == [approved]
            assert {r.id for r in await uow.requests.all()} == {approved, done.id}
        coordination = Coordination(store, parse_config(
            {"node_index": 1, "database_url": url, "coordination_interval_s": 0.01}))
        asked: list[uuid.UUID] = []

        async def follow(request_id: uuid.UUID) -> None:
            asked.append(request_id)

        monkeypatch.setattr(coordination, "_follow", follow)
        clock = [1000.0]
        monkeypatch.setattr(time, "monotonic", lambda: clock[0])
        for _ in range(5):  # woken five times within the first follow interval
            await coordination.tick()
            clock[0] += 0.05
        assert asked == []  # not at once: a request that starts soon needs no follow
        clock[0] += FOLLOW_INTERVAL_S
        for _ in range(5):  # once in the next interval, never about the completed request
            await coordination.tick()
            clock[0] += 0.05
        assert asked == [approved]
        clock[0] += FOLLOW_INTERVAL_S  # the interval doubled: not yet
        await coordination.tick()
        assert asked == [approved]
        clock[0] += FOLLOW_INTERVAL_S
        await coordination.tick()
        assert asked == [approved, approved]
        for _ in range(20):  # however long it waits: at least every FOLLOW_MAX_INTERVAL_S
            clock[0] += FOLLOW_MAX_INTERVAL_S + 0.01
            await coordination.tick()
        assert asked == [approved] * 22
        async with store.unit_of_work() as uow:  # no longer startable: forgotten
            await uow.requests.set_status(approved, RequestStatus.CANCELLED, "cancelled")
        await coordination.tick()
        assert len(asked) == 22 and not coordination._followed
    finally:
        await store.close()


async def test_an_idle_loop_sleeps_until_woken_a_startable_request_keeps_the_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-1"))
    try:
        config = parse_config({"node_index": 1, "database_url": url,
                               "coordination_interval_s": 0.05})
        coordination = Coordination(store, config)
        retry = RetrySoon(0.05, ())

        async def follow(request_id: uuid.UUID) -> None:
            pass

        monkeypatch.setattr(coordination, "_follow", follow)
        request_id = await submitted_request(store)  # submitted: not startable
        await coordination.tick()
        assert coordination.next_delay(retry) == IDLE_TICK_S
        async with store.unit_of_work() as uow:
            await uow.requests.set_status(request_id, RequestStatus.APPROVED, "approved")
        await coordination.tick()
        assert coordination.next_delay(retry) == 0.05
        slow = Coordination(store, parse_config({"node_index": 1, "database_url": url,
                                                 "coordination_interval_s": 5.0}))
        async with store.unit_of_work() as uow:
            await uow.requests.set_status(request_id, RequestStatus.CANCELLED, "cancelled")
        await slow.tick()
        assert slow.next_delay(RetrySoon(5.0, ())) == 5.0  # never below the interval
    finally:
        await store.close()


async def test_a_request_held_back_by_the_limit_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The coordinator at its limit leaves a startable request for later and shows why
    in its status (and audit), once, not at every tick."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'node.db'}"
    await migrate.upgrade(url)
    store = Store.open(url, NodeKeyring.generate("node-0"))
    try:
        request_id = await submitted_request(store, RequestStatus.APPROVED)
        coordination = Coordination(store, parse_config({"node_index": 0, "database_url": url}))
        monkeypatch.setattr(Coordination, "limit", property(lambda self: 1))
        coordination._starting[uuid.uuid4()] = frozenset()  # one computation runs
        for _ in range(3):
            await coordination.tick()
        async with store.reading() as uow:
            state = await uow.requests.get(request_id)
            entries = await uow.audit.entries(obj=f"request:{request_id}")
        assert state.status is RequestStatus.WAITING_FOR_NODES
        assert state.status_reason == (
            "waiting: 1 computation(s) already running, the most the nodes run at once "
            "(max_concurrent_computations); it starts when one ends")
        assert [e.action for e in entries].count("request.waiting_for_nodes") == 1
    finally:
        await store.close()
