"""The status read that waits for a change (``GET /v1/requests/{id}?wait=`` with
``If-None-Match``): at once when the status differs, woken by whichever commit changes it,
304 at the wait's end, the same body and the same visibility as the plain read; with
``until``, only for those statuses (or an ended one); and the wake-ups behind it
(:class:`~dic_connector.node.api.changes.RequestChanges`)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from dic_connector.node.api.changes import RequestChanges
from dic_connector.node.api.keys import REQUEST_CHANGES
from dic_connector.vocabulary import RequestStatus

from .conftest import Node

#: Longer than any test here may run: an answer before it came from a change, not the wait.
LONG_WAIT_S = 60
#: What a test allows a woken read to take (far below LONG_WAIT_S).
ANSWER_WITHIN_S = 10


async def _submitted(node: Node) -> tuple[str, str, dict[str, Any]]:
    """A request awaiting approval: its id, the ETag and body of its plain read."""
    study = (await (await node.client.post("/v1/studies", json={"title": "S"},
                                           headers=node.auth("alice"))).json())["id"]
    submitted = await node.client.post(f"/v1/studies/{study}/requests",
                                       headers=node.auth("alice"),
                                       json=node.request_body(study))
    request_id = (await submitted.json())["id"]
    response = await node.client.get(f"/v1/requests/{request_id}", headers=node.auth("alice"))
    assert response.status == 200 and response.headers["ETag"].startswith('"')
    return request_id, response.headers["ETag"], dict(await response.json())


async def _waiting(node: Node, request_id: str, waiters: int = 1) -> None:
    """Until ``waiters`` reads wait for ``request_id`` on the node (they watch it)."""
    changes = node.client.server.app[REQUEST_CHANGES]
    for _ in range(1000):
        watch = changes._watches.get(uuid.UUID(request_id))
        if watch is not None and watch.waiters >= waiters:
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"no read waits for request {request_id}")


async def _read(node: Node, request_id: str, who: str = "alice", wait: float | None = None,
                etag: str | None = None, until: str | None = None
                ) -> tuple[int, str | None, Any]:
    headers = {**node.auth(who), **({"If-None-Match": etag} if etag else {})}
    query = "" if wait is None else f"?wait={wait}"
    query += "" if until is None else f"&until={until}"
    response = await node.client.get(f"/v1/requests/{request_id}{query}", headers=headers)
    body = await response.json() if response.status != 304 else None
    return response.status, response.headers.get("ETag"), body


async def test_a_waiting_read_answers_the_change_an_approval_makes(node: Node) -> None:
    request_id, etag, before = await _submitted(node)
    waiting = asyncio.create_task(_read(node, request_id, wait=LONG_WAIT_S, etag=etag))
    await _waiting(node, request_id)
    assert not waiting.done()
    approval = node.signed({"type": "approval", "request_id": request_id, "site": "tm",
                            "decision": "approve"})
    approved = await node.client.post(f"/v1/requests/{request_id}/approvals", json=approval,
                                      headers=node.auth("owner_tm"))
    assert approved.status == 201
    status, new_etag, body = await asyncio.wait_for(waiting, ANSWER_WITHIN_S)
    assert status == 200 and body["status"] == "approved" and new_etag != etag
    assert before["status"] == "awaiting_approval"
    # the same body, and tag, as the plain read
    plain_status, plain_etag, plain = await _read(node, request_id)
    assert (plain_status, plain_etag, plain) == (200, new_etag, body)
    assert len(node.client.server.app[REQUEST_CHANGES]) == 0  # the watch is forgotten


async def test_a_change_made_outside_the_api_wakes_the_read(node: Node) -> None:
    """As the coordination loop and a peer's message change a status: through the store."""
    request_id, etag, _ = await _submitted(node)
    waiting = asyncio.create_task(_read(node, request_id, wait=LONG_WAIT_S, etag=etag))
    await _waiting(node, request_id)
    async with node.store.unit_of_work() as uow:
        await uow.requests.set_status(uuid.UUID(request_id), RequestStatus.FAILED,
                                      "mpc session lost node-2")
    status, _, body = await asyncio.wait_for(waiting, ANSWER_WITHIN_S)
    assert status == 200
    assert (body["status"], body["status_reason"]) == ("failed", "mpc session lost node-2")


async def test_a_rolled_back_change_does_not_end_the_wait(node: Node) -> None:
    request_id, etag, _ = await _submitted(node)
    waiting = asyncio.create_task(_read(node, request_id, wait=0.5, etag=etag))
    await _waiting(node, request_id)
    with pytest.raises(RuntimeError):
        async with node.store.unit_of_work() as uow:
            await uow.requests.set_status(uuid.UUID(request_id), RequestStatus.FAILED, "no")
            raise RuntimeError("rolled back")
    status, same, body = await asyncio.wait_for(waiting, ANSWER_WITHIN_S)
    assert (status, same, body) == (304, etag, None)


async def test_an_unchanged_status_answers_304_with_its_tag(node: Node) -> None:
    request_id, etag, body = await _submitted(node)
    assert await _read(node, request_id, etag=etag) == (304, etag, None)  # no wait: at once
    assert await _read(node, request_id, wait=0.2, etag=etag) == (304, etag, None)
    assert await _read(node, request_id, etag=f'W/{etag}, "other"') == (304, etag, None)
    # a tag of another state: the status at once, however long the wait
    status, tag, fresh = await asyncio.wait_for(
        _read(node, request_id, wait=LONG_WAIT_S, etag='"stale"'), ANSWER_WITHIN_S)
    assert (status, tag, fresh) == (200, etag, body)


async def test_a_read_waits_for_a_request_to_arrive(node: Node) -> None:
    """A request not replicated here yet: the read answers once it arrives (404 at the
    wait's end otherwise)."""
    study = (await (await node.client.post("/v1/studies", json={"title": "S"},
                                           headers=node.auth("alice"))).json())["id"]
    body = node.request_body(study)
    request_id = json.loads(body["payload"])["id"]
    assert (await _read(node, request_id, wait=0.1))[0] == 404
    waiting = asyncio.create_task(_read(node, request_id, wait=LONG_WAIT_S))
    await _waiting(node, request_id)
    submitted = await node.client.post(f"/v1/studies/{study}/requests",
                                       headers=node.auth("alice"), json=body)
    assert submitted.status == 201
    status, _, seen = await asyncio.wait_for(waiting, ANSWER_WITHIN_S)
    assert status == 200 and seen["id"] == request_id


async def test_waiting_discloses_nothing_the_plain_read_does_not(node: Node) -> None:
    """Another researcher and an owner of a site not involved get 404 at their wait's end,
    even when the request changes meanwhile; without credentials, 401 at once."""
    request_id, etag, _ = await _submitted(node)
    unauthenticated = await node.client.get(f"/v1/requests/{request_id}?wait={LONG_WAIT_S}")
    assert unauthenticated.status == 401
    others = [asyncio.create_task(_read(node, request_id, who, wait=1.0, etag=etag))
              for who in ("mallory", "owner_tr")]
    await _waiting(node, request_id, waiters=2)
    async with node.store.unit_of_work() as uow:
        await uow.requests.set_status(uuid.UUID(request_id), RequestStatus.FAILED, "x")
    for task in others:
        status, tag, body = await asyncio.wait_for(task, ANSWER_WITHIN_S)
        assert status == 404 and tag is None
        assert body["detail"] == f"analysis request {request_id} not found"


async def test_until_answers_only_the_statuses_asked_for_or_an_end(node: Node) -> None:
    """Approved is a change, but not one asked for: the read waits on; failed is an end,
    which it answers though not asked for. At the wait's end, the status as it is."""
    request_id, etag, _ = await _submitted(node)
    waiting = asyncio.create_task(_read(node, request_id, wait=LONG_WAIT_S, etag=etag,
                                        until="completed,running"))
    await _waiting(node, request_id)
    approval = node.signed({"type": "approval", "request_id": request_id, "site": "tm",
                            "decision": "approve"})
    approved = await node.client.post(f"/v1/requests/{request_id}/approvals", json=approval,
                                      headers=node.auth("owner_tm"))
    assert approved.status == 201
    await _waiting(node, request_id)  # woken by the approval, and waiting again
    assert not waiting.done()
    async with node.store.unit_of_work() as uow:
        await uow.requests.set_status(uuid.UUID(request_id), RequestStatus.FAILED, "x")
    status, _, body = await asyncio.wait_for(waiting, ANSWER_WITHIN_S)
    assert (status, body["status"]) == (200, "failed")
    # an unchanged status not asked for: 304 at the wait's end; a changed one: 200
    _, failed_etag, _ = await _read(node, request_id)
    assert await _read(node, request_id, wait=0.2, etag=failed_etag,
                       until="completed") == (304, failed_etag, None)
    request_id, etag, _ = await _submitted(node)
    status, _, body = await _read(node, request_id, wait=0.2, etag='"stale"',
                                  until="completed")
    assert (status, body["status"]) == (200, "awaiting_approval")
    status, _, body = await _read(node, request_id, wait=LONG_WAIT_S, etag='"stale"',
                                  until="awaiting_approval")
    assert (status, body["status"]) == (200, "awaiting_approval")  # already there: at once


async def test_a_bad_until_is_a_400_naming_the_status(node: Node) -> None:
    request_id, _, _ = await _submitted(node)
    response = await node.client.get(f"/v1/requests/{request_id}?wait=1&until=completed,done",
                                     headers=node.auth("alice"))
    assert response.status == 400
    detail = (await response.json())["detail"]
    assert "query parameter 'until'" in detail and "'done'" in detail


@pytest.mark.parametrize("wait", ["-1", "soon", "nan", "inf"])
async def test_a_bad_wait_is_a_400_naming_the_parameter(node: Node, wait: str) -> None:
    request_id, _, _ = await _submitted(node)
    response = await node.client.get(f"/v1/requests/{request_id}?wait={wait}",
                                     headers=node.auth("alice"))
    assert response.status == 400
    assert "query parameter 'wait'" in (await response.json())["detail"]


async def test_the_document_declares_the_wait_the_condition_and_the_304(node: Node) -> None:
    document = await (await node.client.get("/openapi.json")).json()
    operation = document["paths"]["/v1/requests/{request_id}"]["get"]
    names = {(p["in"], p["name"]) for p in operation["parameters"]}
    assert {("path", "request_id"), ("query", "wait"), ("query", "until"),
            ("header", "If-None-Match")} <= names
    assert "ETag" in operation["responses"]["200"]["headers"]
    assert "ETag" in operation["responses"]["304"]["headers"]
    assert "400" in operation["responses"]


# -- the wake-ups -----------------------------------------------------------------------------

async def test_the_store_tells_each_commit_that_writes_a_request_row_approval_or_result(
        node: Node) -> None:
    request_id, _, _ = await _submitted(node)
    told: list[frozenset[uuid.UUID]] = []
    node.store.request_observers.append(told.append)
    rid = uuid.UUID(request_id)
    async with node.store.unit_of_work() as uow:  # a result alone (no status change)
        await uow.results.store(rid, {"n": 24})
    async with node.store.unit_of_work() as uow:  # reads only
        await uow.requests.get(rid)
        await uow.audit.append("test", "request.look", f"request:{rid}")
    approval = node.signed({"type": "approval", "request_id": request_id, "site": "tm",
                            "decision": "approve"})
    await node.client.post(f"/v1/requests/{request_id}/approvals", json=approval,
                           headers=node.auth("owner_tm"))
    node.store.request_observers.remove(told.append)
    assert told == [frozenset({rid}), frozenset({rid})]


async def test_notify_wakes_the_waiters_of_that_request_only() -> None:
    changes = RequestChanges()
    one, other = uuid.uuid4(), uuid.uuid4()
    with changes.watch(one) as first, changes.watch(one) as second, \
            changes.watch(other) as third:
        changes.notify([one])
        assert first.is_set() and second.is_set() and not third.is_set()
        with changes.watch(one) as later:  # a later waiter waits for the next change
            assert not later.is_set()
    assert len(changes) == 0


async def test_close_wakes_every_waiter_now_and_later() -> None:
    changes = RequestChanges()
    with changes.watch(uuid.uuid4()) as waiting:
        changes.close()
        assert waiting.is_set() and changes.closed
    with changes.watch(uuid.uuid4()) as later:
        assert later.is_set()
