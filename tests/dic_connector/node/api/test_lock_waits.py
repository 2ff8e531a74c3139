"""``dic_lock_wait_seconds``: how long write transactions queue for the SQLite writers of the
process and computations for the compute lock, in /metrics (issue 17)."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from dic_connector.errors import DicError
from dic_connector.node.api.keys import COORDINATION
from dic_connector.node.coordination.verify import Plan
from dic_connector.node.store.ledger import LedgerHead

from .conftest import Node


def _sample(text: str, name: str, labels: str) -> float:
    match = re.search(rf"^{name}\{{{labels}\}} (\S+)$", text, re.MULTILINE)
    assert match, f"{name}{{{labels}}} missing"
    return float(match.group(1))


async def test_writers_queued_behind_a_long_transaction_are_measured(node: Node) -> None:
    metrics = await (await node.client.get("/metrics")).text()
    before = _sample(metrics, "dic_lock_wait_seconds_count", 'lock="database_writers"')
    assert _sample(metrics, "dic_lock_wait_seconds_count", 'lock="compute"') == 0
    held = asyncio.Event()

    async def long_writer() -> None:
        async with node.store.unit_of_work() as uow:
            await uow.sites.add("lx", "held")
            held.set()
            await asyncio.sleep(0.2)

    async def queued_writer(i: int) -> None:
        await held.wait()
        async with node.store.unit_of_work() as uow:
            await uow.sites.add(f"q{i}", "queued")

    await asyncio.gather(long_writer(), *(queued_writer(i) for i in range(3)))
    metrics = await (await node.client.get("/metrics")).text()
    count = _sample(metrics, "dic_lock_wait_seconds_count", 'lock="database_writers"')
    assert count - before == 4  # every write transaction, the uncontended one too
    # the three queued ones waited about the 0.2 s the first held the lock
    fast = _sample(metrics, "dic_lock_wait_seconds_bucket", 'le="0.1",lock="database_writers"')
    assert count - fast >= 3
    assert _sample(metrics, "dic_lock_wait_seconds_sum", 'lock="database_writers"') >= 0.3


async def test_a_start_queued_behind_a_computation_is_measured(node: Node) -> None:
    """A start waits for a slot of the compute semaphore before it checks its plan: the wait
    is observed even though this plan (an unknown request) then fails its check."""
    coordination = node.client.server.app[COORDINATION]
    plan = Plan(uuid.uuid4(), {}, 5, LedgerHead(0, "0" * 64))
    slots = coordination.config.max_concurrent_computations
    for _ in range(slots):  # as many computations in progress as the node runs at once
        await coordination.compute_lock.acquire()
    try:
        start = asyncio.ensure_future(coordination.start(plan, b"s" * 16, {}))
        await asyncio.sleep(0.2)
        assert not start.done()
    finally:
        for _ in range(slots):
            coordination.compute_lock.release()
    with pytest.raises(DicError):
        await start
    metrics = await (await node.client.get("/metrics")).text()
    assert _sample(metrics, "dic_lock_wait_seconds_count", 'lock="compute"') == 1
    assert _sample(metrics, "dic_lock_wait_seconds_sum", 'lock="compute"') >= 0.1
