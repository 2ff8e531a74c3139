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

The clock and the sleep are injectable, so tests drive time instead of waiting for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

RunNow = Callable[[str, str], Awaitable[bool]]
Sleep = Callable[[float], Awaitable[None]]
#: the trigger recorded for the runs a debouncer starts
TRIGGER = "subscription"


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
        self._task: asyncio.Task[None] | None = None
        #: runs started, and pokes received (for tests and status pages)
        self.runs = 0
        self.pokes = 0
        self.running = False

    @property
    def pending(self) -> bool:
        return self._poked.is_set()

    def poke(self) -> None:
        """The source changed: a run is due after the window."""
        now = self._clock()
        self.pokes += 1
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
                await self._sleep(wait)
            self._poked.clear()
            self._first = None
            self.runs += 1
            self.running = True
            try:
                ok = await self._run(self.dataset, TRIGGER)
            except Exception:  # the runner records failures; this loop must survive them
                self._log.exception("subscription run of %s raised", self.dataset)
                ok = False
            finally:
                self.running = False
            if not ok and not self._poked.is_set():
                now = self._clock()
                self._first, self._due = now, now + self.retry_delay_s
                self._poked.set()
