"""A node whose own audit chain is broken takes part in no computation: an approved request
waits with the reason naming the node and the entry, and nothing is computed. The check
resumes from where the process last verified, which must still be there unchanged; a new
process verifies from genesis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text

from dic_connector.errors import NotFoundError, NotReady
from dic_connector.node.coordination.verify import check_own_audit
from dic_connector.node.store.audit import ChainHead
from dic_connector.node.store.unit_of_work import Store

from .conftest import Cluster, cohort


async def test_a_broken_chain_keeps_the_node_out_of_every_computation(
        cluster: Cluster) -> None:
    await cluster.upload("tm", cohort(30, seed=11))
    first = await cluster.approved_count(0, 0)
    assert [r["n"] for r in await cluster.completed_everywhere(first)] == [30] * 3
    async with cluster.stores[1].unit_of_work() as uow:
        verified = uow.verified_audit.head
    assert verified.seq > 0  # node-1 verified its chain for the first computation

    # someone edits the newest entry node-1 verified (the point its next check starts from)
    async with cluster.stores[1].engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'someone else', "
                                f"hash = '{'f' * 64}' WHERE seq = {verified.seq}"))
    request_id = await cluster.approved_count(0, 0)
    reason = ""
    for _ in range(300):  # the coordinator keeps proposing; node-1 keeps refusing
        state = await cluster.status(0, request_id)
        reason = (state.status_reason or "") if state is not None else ""
        if "audit chain is broken" in reason:
            break
        await asyncio.sleep(0.1)
    assert f"node-1: its audit chain is broken at entry {verified.seq}" in reason
    assert state is not None and state.status.value == "waiting_for_nodes"
    for node in range(3):
        async with cluster.stores[node].unit_of_work() as uow:
            with pytest.raises(NotFoundError):
                await uow.results.for_request(uuid.UUID(request_id))


async def test_an_entry_verified_earlier_that_is_gone_is_caught(cluster: Cluster) -> None:
    store = cluster.stores[2]
    async with store.unit_of_work() as uow:
        await uow.audit.append("test", "probe", "x", {})
    async with store.unit_of_work() as uow:
        head = await uow.audit.head()
        assert (await uow.audit.verify_chain(start=ChainHead(0, "0" * 64))).broken_seq is None
        assert (await uow.audit.verify_chain(start=head)).broken_seq is None
    async with store.engine.begin() as conn:
        await conn.execute(text(f"DELETE FROM audit_log WHERE seq = {head.seq}"))
    async with store.unit_of_work() as uow:
        result = await uow.audit.verify_chain(start=head)
    assert result.broken_seq == head.seq and "gone or changed" in (result.reason or "")


async def test_a_new_process_verifies_from_genesis(cluster: Cluster) -> None:
    store = cluster.stores[0]
    async with store.unit_of_work() as uow:
        await uow.audit.append("test", "probe", "x", {})
        await uow.audit.append("test", "probe", "y", {})
    async with store.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_log SET actor = 'someone else' WHERE seq = 1"))
    fresh = Store(store.engine, store.keyring)  # as after a restart: nothing verified yet
    async with fresh.unit_of_work() as uow:
        with pytest.raises(NotReady, match="broken at entry 1"):
            await check_own_audit(uow, "node-0")
