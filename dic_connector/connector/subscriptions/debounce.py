"""Many notifications, one run: a trailing-edge debounce per dataset.

A change on the FHIR server often comes as a burst (a batch of a hundred Observations is a
hundred events). Since every run is a full pull, one run after the burst contains all of it:

- :meth:`Debouncer.poke` (a notification said the source changed) makes a run due
  ``window_s`` after the *latest* poke (trailing edge), but never later than ``max_delay_s``
  after the first poke still waiting, so a steady stream of changes still gets runs;
- a poke while a run is in progress makes exactly one more run due after it (the run in
  progress may have read the source before that change);
- a run that fails is tried again ``retry_delay_s`` later (sooner if another poke comes);
  the scheduler's ``reconcile`` runs go on regardless.

Each run is recorded with its trigger: ``subscription`` when notifications asked for it,
``subscription:<reason>`` when a *recovery* did (:class:`Recovery`: the watcher found
events that were never delivered, a subscription in ``error`` or gone, ...). A window that
holds pokes of both kinds records the first recovery's reason: the run is there because of
it, the notifications alone might never have come. A retried run keeps its trigger.

The clock and the sleep are injectable, so tests drive time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

RunNow = Callable[[str, str], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]
#: the trigger recorded for the runs a debouncer starts (``subscription:<reason>`` when a
#: recovery asked for the run)
TRIGGER = "subscription"


class Recovery(StrEnum):
    """Why the connector asked for a run, or for its subscription again, without a
    notification of a change (docs/connector.md, "Subscriptions", the failure table)."""

    #: a pushed notification (heartbeat, handshake, event) counted events never delivered
    GAP = "gap"
    #: the ``$status`` operation counted events never delivered (a periodic check, or the
    #: check at start: events while the connector was down)
    STATUS = "status"
    #: no notification for two heartbeat periods, and the check that followed counted
    #: events never delivered
    HEARTBEAT = "heartbeat"
    #: the subscription was found in ``error`` or ``off`` and re-activated
    ERROR = "error"
    #: the subscription was gone from the server and created again
    MISSING = "missing"

    @property
    def trigger(self) -> str:
        return f"{TRIGGER}:{self.value}"


class Debouncer:
    """One dataset's pending run (see the module docstring)."""

    def __init__(self, dataset: str, run: RunNow, window_s: float, *,
                 max_delay_s: float | None = None, retry_delay_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, sleep: Sleep = asyncio.sleep,
                 logger: logging.Logger | None = None) -> None:
        self.dataset = dataset
        self.window_s = window_s
        self.max_delay_s = max(window_s, 10 * window_s if max_delay_s is None else max_delay_s)
        self.retry_delay_s = retry_delay_s
        self._run = run
        self._clock = clock
        self._sleep = sleep
        self._log = logger or logging.getLogger("dic_connector.connector")
        self._poked = asyncio.Event()
        self._first: float | None = None
        self._due = 0.0
        self._reason: Recovery | None = None
        self._task: asyncio.Task[None] | None = None
        #: runs started, and pokes received (for tests and status pages)
        self.runs = 0
        self.pokes = 0
        self.running = False

    @property
    def pending(self) -> bool:
        return self._poked.is_set()

    def poke(self, reason: Recovery | None = None) -> None:
        """The source changed (or may have: ``reason``, a recovery): a run is due after the
        window."""
        now = self._clock()
        self.pokes += 1
        if self._reason is None:
            self._reason = reason
        if self._first is None:
            self._first = now
        self._due = min(now + self.window_s, self._first + self.max_delay_s)
        self._poked.set()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name=f"debounce:{self.dataset}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self._poked.wait()
            while (wait := self._due - self._clock()) > 0:
                # at most a window at a time: a poke may have brought the run forward
                # (a retry is 60 s away, a poke makes it due a window after itself)
                await self._sleep(min(wait, self.window_s))
            self._poked.clear()
            self._first = None
            reason, self._reason = self._reason, None
            self.runs += 1
            self.running = True
            try:
                ok = await self._run(self.dataset, TRIGGER if reason is None else reason.trigger)
            except Exception:  # the runner records failures; this loop must survive them
                self._log.exception("subscription run of %s raised", self.dataset)
                ok = False
            finally:
                self.running = False
            if not ok:
                if self._reason is None:
                    self._reason = reason  # the retry is the same recovery
                if not self._poked.is_set():
                    now = self._clock()
                    self._first, self._due = now, now + self.retry_delay_s
                    self._poked.set()
