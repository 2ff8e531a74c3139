"""FHIR subscription state: duplicates ignored, next advances, gaps flagged until recovered."""

from __future__ import annotations

import pytest

from dic_connector.errors import ConflictError
from dic_connector.node.store.enums import EventOrder, SubscriptionStatus
from dic_connector.node.store.unit_of_work import Store

TOPIC = "http://example.org/SubscriptionTopic/patient-changes"


async def test_event_numbers_are_classified(store: Store) -> None:
    async with store.unit_of_work() as uow:
        await uow.sites.add("lmu", "LMU")
        sub = await uow.subscriptions.register("sub-1", "lmu", TOPIC)
        assert (sub.status, sub.last_event_number) == (SubscriptionStatus.REQUESTED, 0)
        assert await uow.subscriptions.register("sub-1", "lmu", TOPIC) is sub
        with pytest.raises(ConflictError, match="another site or topic"):
            await uow.subscriptions.register("sub-1", "lmu", TOPIC + "-other")
    async with store.unit_of_work() as uow:
        record = uow.subscriptions.record_event
        assert [await record("sub-1", n) for n in (1, 2, 2, 1, 3)] == [
            EventOrder.NEXT, EventOrder.NEXT, EventOrder.DUPLICATE, EventOrder.DUPLICATE,
            EventOrder.NEXT]
        assert await record("sub-1", 6) is EventOrder.GAP
        assert await record("sub-1", 4) is EventOrder.GAP  # stays in error until recovered
        sub = await uow.subscriptions.get("sub-1")
        assert (sub.status, sub.last_event_number) == (SubscriptionStatus.ERROR, 3)
        await uow.subscriptions.mark_recovered("sub-1", 6)
        assert await record("sub-1", 7) is EventOrder.NEXT
    async with store.unit_of_work() as uow:
        sub = await uow.subscriptions.get("sub-1")
        assert (sub.status, sub.last_event_number) == (SubscriptionStatus.ACTIVE, 7)
        assert [s.id for s in await uow.subscriptions.for_site("lmu")] == ["sub-1"]
