"""When a dataset runs next: fixed intervals and cron expressions, and the loop that waits.

A schedule is anchored on the *start* of the dataset's last run as the state database
records it (:meth:`~dic_connector.connector.state.StateStore.last_run`), not on the time
the service started, so restarting the service neither skips nor doubles a run:

- ``every``: the next run is due ``every`` seconds after the last one started; when that
  moment passed while the service was down, the run is due at once (one catch-up run, not
  one per missed interval). A dataset that never ran is due at once.
- ``subscription`` (:mod:`.subscriptions`): the ``reconcile`` period is an ``every``; its
  runs are recorded with the trigger ``reconcile``, a last line of defence behind the
  notifications.
- ``cron``: the next run is due at the first time the five-field expression (UTC, via
  `croniter <https://github.com/pallets-eco/croniter>`_, which implements Vixie cron's
  rules) matches after the last start; a missed time again gives one catch-up run. A
  dataset that never ran waits for the first match after now.

:class:`Scheduler` runs one task per scheduled dataset that sleeps until the dataset is due
and calls the runner; a run that fails is recorded by the runner and the schedule goes on
(the next attempt is the next due time, which for a run that started long ago is at once,
so a minimum retry delay keeps a broken source from being hammered).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from croniter import croniter

from dic_connector.connector.config import DatasetConfig, Trigger, TriggerKind

#: after a failed run, wait at least this long before the next attempt
RETRY_DELAY_S = 60.0
#: longest single sleep, so that a changed clock is noticed
MAX_SLEEP_S = 300.0

LastStart = Callable[[str], Awaitable[dt.datetime | None]]
RunNow = Callable[[str, str], Awaitable[bool]]


def next_due(trigger: Trigger, now: dt.datetime, last_start: dt.datetime | None
             ) -> dt.datetime | None:
    """When a dataset with ``trigger`` is next due (``None``: only on demand)."""
    if trigger.kind is TriggerKind.MANUAL:
        return None
    if trigger.every_s is not None:
        if last_start is None:
            return now
        return max(now, last_start + dt.timedelta(seconds=trigger.every_s))
    assert trigger.cron is not None
    anchor = last_start or now
    due: dt.datetime = croniter(trigger.cron, anchor).get_next(dt.datetime)
    return max(now, due) if last_start is not None else due


def _label(trigger: Trigger) -> str:
    """The trigger recorded for a run this loop starts: a subscription dataset's periodic
    full pull is its ``reconcile`` run."""
    return "reconcile" if trigger.kind is TriggerKind.SUBSCRIPTION else "schedule"


class Scheduler:
    """One task per scheduled dataset: sleep until due, run, repeat."""

    def __init__(self, datasets: tuple[DatasetConfig, ...], last_start: LastStart,
                 run: RunNow, *, clock: Callable[[], dt.datetime] | None = None,
                 logger: logging.Logger | None = None) -> None:
        self._datasets = [d for d in datasets
                          if d.trigger.kind in (TriggerKind.SCHEDULE, TriggerKind.SUBSCRIPTION)]
        self._last_start = last_start
        self._run = run
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._log = logger or logging.getLogger("dic_connector.connector")
        self._tasks: list[asyncio.Task[None]] = []
        #: dataset -> when it is next due (for status pages)
        self.due: dict[str, dt.datetime | None] = {}

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(d), name=f"schedule:{d.name}")
                       for d in self._datasets]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(self, dataset: DatasetConfig) -> None:
        failed_at: dt.datetime | None = None
        while True:
            now = self._clock()
            due = next_due(dataset.trigger, now, await self._last_start(dataset.name))
            assert due is not None
            if failed_at is not None:
                due = max(due, failed_at + dt.timedelta(seconds=RETRY_DELAY_S))
            self.due[dataset.name] = due
            wait_s = (due - now).total_seconds()
            if wait_s > 0:
                await asyncio.sleep(min(wait_s, MAX_SLEEP_S))
                continue
            # unknown until this run's start is recorded (the next due counts from it): the
            # old value would otherwise show, due in the past, between the run and the update
            self.due[dataset.name] = None
            try:
                ok = await self._run(dataset.name, _label(dataset.trigger))
            except Exception:  # the runner records failures; this loop must survive them
                self._log.exception("scheduled run of %s raised", dataset.name)
                ok = False
            failed_at = None if ok else self._clock()
