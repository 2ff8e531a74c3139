"""State of the FHIR Subscriptions a site's connector follows (DESIGN.md §7).

FHIR R5 (and the R4 Backport IG) number notifications per subscription with
``eventsSinceSubscriptionStart``; a notification may arrive twice, late, or not at all
(https://build.fhir.org/subscriptions.html#events, "Handling Errors / Missing Notifications").
:meth:`SubscriptionRepository.record_event` classifies each event number against the last one
processed: a duplicate is ignored (idempotence), the next one advances the counter, and a gap
puts the subscription in ``error`` until the connector has re-pulled what changed and calls
:meth:`SubscriptionRepository.mark_recovered`.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import ConflictError, NotFoundError
from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.enums import EventOrder, SubscriptionStatus
from dic_connector.node.store.models import Subscription


class SubscriptionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def register(self, subscription_id: str, site_id: str, topic: str) -> Subscription:
        """Create (or return unchanged) the record of a subscription, state ``requested``."""
        existing = await self._session.get(Subscription, subscription_id)
        if existing is not None:
            if (existing.site_id, existing.topic) != (site_id, topic):
                raise ConflictError(f"subscription '{subscription_id}' is registered for another "
                                 "site or topic")
            return existing
        subscription = Subscription(id=subscription_id, site_id=site_id, topic=topic,
                                    status=SubscriptionStatus.REQUESTED, last_event_number=0)
        await insert(self._session, f"subscription '{subscription_id}'", subscription)
        return subscription

    async def get(self, subscription_id: str) -> Subscription:
        subscription = await self._session.get(Subscription, subscription_id)
        if subscription is None:
            raise NotFoundError(f"subscription '{subscription_id}' not found")
        return subscription

    async def _locked(self, subscription_id: str) -> Subscription:
        subscription = await self._session.scalar(
            select(Subscription).where(Subscription.id == subscription_id)
            .with_for_update().execution_options(populate_existing=True)
        )
        if subscription is None:
            raise NotFoundError(f"subscription '{subscription_id}' not found")
        return subscription

    async def record_event(self, subscription_id: str, event_number: int) -> EventOrder:
        """Classify ``event_number``; advance on ``next``, switch to ``error`` on a gap."""
        subscription = await self._locked(subscription_id)
        if event_number <= subscription.last_event_number:
            return EventOrder.DUPLICATE
        if event_number == subscription.last_event_number + 1 and \
                subscription.status is not SubscriptionStatus.ERROR:
            subscription.last_event_number = event_number
            subscription.status = SubscriptionStatus.ACTIVE
            await self._session.flush()
            return EventOrder.NEXT
        subscription.status = SubscriptionStatus.ERROR
        await self._session.flush()
        return EventOrder.GAP

    async def mark_recovered(self, subscription_id: str, up_to_event: int) -> Subscription:
        """After a full re-pull: everything up to ``up_to_event`` is reflected; active again."""
        subscription = await self._locked(subscription_id)
        subscription.last_event_number = max(subscription.last_event_number, up_to_event)
        subscription.status = SubscriptionStatus.ACTIVE
        await self._session.flush()
        return subscription

    async def set_status(self, subscription_id: str,
                         status: SubscriptionStatus) -> Subscription:
        subscription = await self._locked(subscription_id)
        subscription.status = status
        await self._session.flush()
        return subscription

    async def for_site(self, site_id: str) -> list[Subscription]:
        return list(await self._session.scalars(
            select(Subscription).where(Subscription.site_id == site_id).order_by(Subscription.id)
        ))
