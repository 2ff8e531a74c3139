"""The outbox's view of what is still to reach each peer about one request (the coordinator
asks before it has the peers prepare): the request's own path and those below it, never a
look-alike path (LIKE wildcards in a path are escaped), delivered messages not at all."""

from __future__ import annotations

from dic_connector.node.store.unit_of_work import Store


async def test_pending_about_a_request_and_what_is_below_it(store: Store) -> None:
    rid = "0f89a29e-3f21-4371-802a-d1993b1fc9a8"
    async with store.unit_of_work() as uow:
        await uow.outbox.enqueue([1], "request", "PUT", f"/v1/peer/requests/{rid}", {})
        await uow.outbox.enqueue([2], "approval", "POST",
                                 f"/v1/peer/requests/{rid}/approvals", {})
        await uow.outbox.enqueue([1, 2], "request", "PUT", f"/v1/peer/requests/{rid}x", {})
        await uow.outbox.enqueue([1], "policy", "POST", "/v1/peer/policies", {})
        await uow.outbox.enqueue([2], "other", "POST", "/v1/peer/aXb/c", {})
    async with store.reading() as uow:
        assert await uow.outbox.pending_about(f"/v1/peer/requests/{rid}") == {1, 2}
        assert await uow.outbox.pending_about(f"/v1/peer/requests/{rid}",
                                              "/v1/peer/policies") == {1, 2}
        assert await uow.outbox.pending_about("/v1/peer/policies") == {1}
        assert await uow.outbox.pending_about("/v1/peer/a%") == set()  # % is no wildcard
        assert await uow.outbox.pending_about("/v1/peer/a_b") == set()  # _ neither
        assert await uow.outbox.pending_about("/v1/peer/aXb") == {2}
        assert await uow.outbox.pending_about("/v1/peer") == {1, 2}
        due = await uow.outbox.due(2, 10)
    async with store.unit_of_work() as uow:
        for message in due:
            await uow.outbox.delivered(message.id)
    async with store.reading() as uow:
        assert await uow.outbox.pending_about(f"/v1/peer/requests/{rid}") == {1}
