"""One dataset's subscription: notifications in, runs out, and a watchdog for silence.

:class:`SubscriptionWatcher` ties the parts together for a dataset whose trigger is a
subscription:

- **start**: restore the event numbers seen from the state database (:mod:`.ledger`), then,
  in the background, find or create the subscription on the FHIR server and re-activate it
  if it is in ``error`` or ``off`` (:mod:`.server`). A subscription created, rewritten or
  re-activated asks for a run: the server did not notify what changed before.
- **receive** (from :mod:`.receiver`): account for the numbers, record them, count them, and
  poke the :class:`~.debounce.Debouncer` if the source changed or a count shows events that
  were never delivered. Never a payload: only types, subscription ids and event numbers.
- **watchdog**, every heartbeat period: after two periods without any notification (a
  backport server sends heartbeats; a classic rest-hook has none, so it is checked every
  period), read the subscription and ask ``$status``. A count above the highest number seen
  asks for a run; a subscription in ``error``/``off`` is re-activated and a run asked for;
  one that vanished is created again. A FHIR server that cannot be reached is tried again
  next period; the ``reconcile`` runs of the scheduler go on regardless.

Every such **recovery** (a run, or the subscription re-requested, that no notification of a
change asked for) is counted in ``dic_connector_subscription_recoveries_total{dataset,
reason}``, logged as ``subscription.recovery`` and names the run it asks for
(``subscription:<reason>`` in the run history), the reason being what found the failure
(:class:`~.debounce.Recovery`): a pushed count (``gap``), ``$status`` (``status``), the
check after two silent heartbeat periods (``heartbeat``), a subscription in ``error``/``off``
(``error``) or gone (``missing``).

Failure modes, how each is detected, how each recovers: see ``docs/connector.md``,
"Subscriptions".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from dic_connector.connector.config import DatasetConfig, SubscriptionKind, SubscriptionTrigger
from dic_connector.connector.metrics import ConnectorMetrics
from dic_connector.connector.state import StateStore
from dic_connector.connector.subscriptions import resources
from dic_connector.connector.subscriptions.debounce import Debouncer, Recovery, RunNow, Sleep
from dic_connector.connector.subscriptions.ledger import Ledger, Verdict
from dic_connector.connector.subscriptions.notifications import Notification, NotificationType
from dic_connector.connector.subscriptions.server import SubscriptionServer
from dic_connector.errors import DicError
from dic_connector.sources import BulkExportConfig, FhirRestConfig, HttpClient


class SubscriptionWatcher:
    """The subscription of one dataset (see the module docstring)."""

    def __init__(self, dataset: DatasetConfig, site: str, state: StateStore,
                 metrics: ConnectorMetrics, run: RunNow, *,
                 client: HttpClient | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
                 logger: logging.Logger | None = None) -> None:
        settings = dataset.trigger.subscription
        assert settings is not None
        source = dataset.source
        assert isinstance(source, FhirRestConfig | BulkExportConfig)
        self.name = dataset.name
        self.settings: SubscriptionTrigger = settings
        self.state = state
        self.metrics = metrics
        self._outer_run = run
        self._clock = clock
        self._sleep = sleep
        self._log = logger or logging.getLogger("dic_connector.connector")
        self.client = client or HttpClient(source.base_url, source.auth, source.http)
        self.server = SubscriptionServer(self.client, settings, site, dataset.name)
        self.debouncer = Debouncer(dataset.name, self._run, settings.debounce_s, clock=clock,
                                   sleep=sleep, logger=self._log)
        self.ledger = Ledger()
        #: the subscription's id on the server (None until found or created)
        self.subscription: str | None = None
        self.last_contact = clock()
        self._save_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def secret(self) -> str:
        return self.settings.secret

    async def start(self) -> None:
        self.ledger = Ledger(await self.state.subscription_events(self.name))
        self.last_contact = self._clock()
        self.debouncer.start()
        self._task = asyncio.create_task(self._watch(), name=f"subscription:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.debouncer.stop()
        await self.client.close()

    async def _run(self, name: str, trigger: str) -> bool:
        self.metrics.subscription_runs.labels(name).inc()
        return await self._outer_run(name, trigger)

    # -- notifications -----------------------------------------------------------------------

    def recover(self, reason: Recovery, **fields: object) -> None:
        """Count, log and run a recovery (see the module docstring)."""
        self.metrics.recoveries.labels(self.name, reason.value).inc()
        self._log.warning("subscription recovery: a run without a notification of the "
                          "change", extra={"event": "subscription.recovery",
                                          "dataset": self.name, "reason": reason.value,
                                          "subscription": self.subscription, **fields})
        self.debouncer.poke(reason)

    async def receive(self, notification: Notification, *,
                      cause: Recovery | None = None) -> Verdict:
        """Account for one notification (see the module docstring); ``cause`` names the
        recovery a count above what was seen is (by default ``gap`` for a pushed
        notification, ``status`` for a ``$status`` answer)."""
        self.last_contact = self._clock()
        verdict = self.ledger.observe(notification)
        m, name = self.metrics, self.name
        m.notifications.labels(name, notification.type.value).inc()
        if verdict.duplicates:
            m.duplicates.labels(name).inc(verdict.duplicates)
        if verdict.late:
            m.late.labels(name).inc(verdict.late)
        fields = {"dataset": name, "subscription": notification.subscription,
                  "type": notification.type.value, "events": len(notification.events),
                  "events_since": notification.events_since, "new": verdict.new,
                  "duplicates": verdict.duplicates, "late": verdict.late,
                  "skipped": verdict.skipped}
        if verdict.missed:
            m.gaps.labels(name).inc()
            m.events_missed.labels(name).inc(verdict.missed)
            self._log.warning("subscription gap: notifications were missed; a full pull "
                              "recovers", extra={"event": "subscription.gap",
                                                 "missed": verdict.missed, **fields})
        else:
            self._log.info("subscription notification",
                           extra={"event": "subscription.notification", **fields})
        if verdict.unseen:
            if cause is None:
                cause = Recovery.STATUS if notification.type is NotificationType.QUERY_STATUS \
                    else Recovery.GAP
            self.recover(cause, unseen=verdict.unseen, type=notification.type.value)
        elif verdict.run:
            self.debouncer.poke()
        if notification.subscription is not None and (verdict.new or verdict.late
                                                      or verdict.unseen or verdict.missed):
            await self._save(notification.subscription)
        return verdict

    async def _save(self, subscription: str) -> None:
        async with self._save_lock:  # the newest snapshot is written last
            highest, missing = self.ledger.seen(subscription).snapshot()
            await self.state.save_subscription_events(self.name, subscription, highest, missing)

    # -- the server side ---------------------------------------------------------------------

    async def ensure(self) -> str:
        """Find, create, rewrite or re-activate the subscription on the server."""
        subscription, action = await self.server.ensure()
        known = self.subscription
        self.subscription = subscription
        self._log.info("subscription on the FHIR server", extra={
            "event": f"subscription.{action}", "dataset": self.name,
            "subscription": subscription, "kind": self.settings.kind.value})
        if action == "reactivated" or (action == "created" and known is not None):
            self.metrics.reactivations.labels(self.name).inc()
            self.recover(Recovery.ERROR if action == "reactivated" else Recovery.MISSING,
                         action=action, previous=known)
        elif action != "reused":
            self.debouncer.poke()
        if action == "created" or known not in (None, subscription):
            await self.state.forget_subscriptions(self.name, subscription)
            self.ledger.forget_others(subscription)
        return action

    async def check(self, cause: Recovery | None = None) -> None:
        """Read the subscription and its ``$status``; recover from what they show (a count
        above what was seen is the recovery ``cause``, by default ``status``)."""
        if self.subscription is None:
            await self.ensure()
            if self.subscription is None:
                return
        found = await self.server.read(self.subscription)
        if found is None:
            await self.ensure()
            return
        status = found.get("status")
        if status in (resources.ERROR, resources.OFF):
            self._log.warning("subscription found inactive: re-activating it", extra={
                "event": "subscription.inactive", "dataset": self.name,
                "subscription": self.subscription, "status": status})
            await self.server.put_requested(found)
            self.metrics.reactivations.labels(self.name).inc()
            self.recover(Recovery.ERROR, status=status)
        reported = await self.server.status(self.subscription)
        if reported is not None and reported.events_since is not None:
            await self.receive(Notification(NotificationType.QUERY_STATUS, self.subscription,
                                            reported.status, reported.events_since),
                               cause=cause)

    async def _watch(self) -> None:
        period = self.settings.heartbeat_s
        started = False
        while True:
            try:
                if not started:
                    await self.ensure()
                    if self.settings.kind is SubscriptionKind.BACKPORT:
                        await self.check()  # a count that moved while the connector was down
                    started = True
                elif self._clock() - self.last_contact >= 2 * period or \
                        self.settings.kind is SubscriptionKind.REST_HOOK:
                    cause = None
                    if self.settings.kind is SubscriptionKind.BACKPORT:
                        cause = Recovery.HEARTBEAT
                        self.metrics.heartbeats_missed.labels(self.name).inc()
                        self._log.warning("no notification for two heartbeat periods", extra={
                            "event": "subscription.silent", "dataset": self.name,
                            "subscription": self.subscription})
                    await self.check(cause)
                    self.last_contact = self._clock()
            except DicError as exc:
                self._log.warning("subscription check failed; trying again next period",
                                  extra={"event": "subscription.check_failed",
                                         "dataset": self.name, "error": str(exc)[:300]})
            except Exception:  # the watchdog must survive a server's surprises
                self._log.exception("subscription check raised; trying again next period",
                                    extra={"event": "subscription.check_failed",
                                           "dataset": self.name})
            await self._sleep(period)


def watchers(datasets: tuple[DatasetConfig, ...], site: str, state: StateStore,
             metrics: ConnectorMetrics, run: Callable[[str, str], Awaitable[bool]],
             logger: logging.Logger | None = None) -> dict[str, SubscriptionWatcher]:
    """A watcher per dataset whose trigger is a subscription (not started)."""
    return {d.name: SubscriptionWatcher(d, site, state, metrics, run, logger=logger)
            for d in datasets if d.trigger.subscription is not None}
