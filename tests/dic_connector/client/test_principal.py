"""Waiting for a request: 404 means "not replicated yet", a request that ends otherwise
stops the wait at once with the node's reason, and time runs out with what was seen."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import replace

import aiohttp
import pytest

from dic_connector.client import VISIBLE, Researcher
from dic_connector.errors import UnexpectedStatus, WaitTimeout
from dic_connector.vocabulary import RequestStatus

from .conftest import Node


async def test_a_request_not_on_the_node_yet_is_waited_for(node: Node) -> None:
    alice = node.researcher()
    study = await alice.create_study("late")
    request_id = str(uuid.uuid4())
    assert await alice.status(request_id) is None  # the node answers 404

    async def submit_later() -> None:
        await asyncio.sleep(0.3)  # as if it were still being replicated
        await alice.submit(study, "count", [node.dataset_id], request_id=request_id)

    waiting = asyncio.create_task(alice.wait(request_id, until=VISIBLE, timeout_s=10))
    await submit_later()
    [state] = await waiting
    assert state.id == request_id and state.status is RequestStatus.AWAITING_APPROVAL


async def test_a_rejected_request_fails_the_wait_at_once(node: Node) -> None:
    alice = node.researcher()
    request_id = await alice.submit(await alice.create_study("x"), "count", [node.dataset_id])
    await node.owner("tm").approve(request_id, decision="deny")
    started = time.monotonic()
    with pytest.raises(UnexpectedStatus) as caught:
        await alice.wait(request_id, until="completed", timeout_s=30)
    assert time.monotonic() - started < 5
    assert caught.value.status == "rejected"
    assert str(caught.value).startswith(f"request {request_id} (count) is rejected on node-0")


async def test_a_failed_request_fails_the_wait_with_the_nodes_reason(node: Node) -> None:
    alice = node.researcher()
    study = await alice.create_study("x")
    ids = [await alice.submit(study, "count", [node.dataset_id]) for _ in range(2)]
    async with node.store.unit_of_work() as uow:  # the API cannot make a computation fail
        await uow.requests.set_status(uuid.UUID(ids[1]), RequestStatus.FAILED,
                                      "mpc session lost node-2")
    with pytest.raises(UnexpectedStatus) as caught:  # two ids: read from the listing
        await alice.wait(ids, until={"completed"}, timeout_s=30)
    assert caught.value.reason == "mpc session lost node-2"
    assert str(caught.value) == (f"request {ids[1]} (count) is failed on node-0: "
                                 "mpc session lost node-2")
    # waiting for the end it reached is no error
    [_, failed] = await alice.wait(ids, until={"awaiting_approval", "failed"}, timeout_s=5)
    assert failed.status is RequestStatus.FAILED


async def test_a_wait_times_out_saying_where_requests_stand(node: Node) -> None:
    alice = node.researcher()
    request_id = await alice.submit(await alice.create_study("x"), "count", [node.dataset_id])
    missing = str(uuid.uuid4())
    with pytest.raises(WaitTimeout) as caught:
        await alice.wait([request_id, missing], until=RequestStatus.COMPLETED, timeout_s=0.2)
    message = str(caught.value)
    assert message.startswith("2 request(s) not completed after 0 s")
    assert f"node-0: {request_id} awaiting_approval" in message
    assert f"node-0: {missing} not there yet" in message


async def test_a_wait_reads_once_per_change_not_per_poll(node: Node) -> None:
    """The wait follows the request with reads that wait on the node: two reads for one
    change however long it takes (polling every ``poll_s`` = 20 ms would make many)."""
    sent: list[str] = []

    async def count(request: aiohttp.ClientRequest,
                    handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
        sent.append(f"{request.method} {request.url.path}")
        return await handler(request)

    alice = node.researcher()
    request_id = await alice.submit(await alice.create_study("x"), "count", [node.dataset_id])
    async with aiohttp.ClientSession(middlewares=(count,)) as session:
        counted = Researcher("alice", node.keys["alice"], [replace(node.client("alice"),
                                                                   session=session)],
                             poll_s=0.02)
        waiting = asyncio.create_task(counted.wait(request_id, until="approved",
                                                   timeout_s=30))
        while len(sent) < 2:  # the first read, then the one waiting on the node
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # 25 polls' worth
        await node.owner("tm").approve(request_id)
        [state] = await waiting
    assert state.status is RequestStatus.APPROVED
    assert sent == [f"GET /v1/requests/{request_id}"] * 2


async def test_a_wait_for_several_requests_follows_each(node: Node) -> None:
    alice = node.researcher()
    study = await alice.create_study("x")
    ids = [await alice.submit(study, "count", [node.dataset_id]) for _ in range(3)]
    waiting = asyncio.create_task(alice.wait(ids, until="approved", timeout_s=30))
    await asyncio.sleep(0.05)
    for request_id in reversed(ids):
        await node.owner("tm").approve(request_id)
    states = await waiting
    assert [s.id for s in states] == ids
    assert {s.status for s in states} == {RequestStatus.APPROVED}
