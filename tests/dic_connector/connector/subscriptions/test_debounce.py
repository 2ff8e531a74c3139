"""The debounce on a driven clock: a burst gives one run after the quiet window, pokes
during a run give exactly one more, a steady stream still runs, a failed run is retried; a
recovery in the window names the run's trigger, and a retry keeps it.
Time is advanced by the test; nothing waits for the wall clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from dic_connector.connector.subscriptions.debounce import TRIGGER, Debouncer, Recovery


class FakeTime:
    """A clock and a sleep that only move when :meth:`advance` says so."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, future))
        await future

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        """Move time forward in steps, letting woken tasks run after each."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for wake, future in list(self._sleepers):
                if wake <= self.now:
                    self._sleepers.remove((wake, future))
                    if not future.done():
                        future.set_result(None)
            await settle()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


class Runs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.gate: asyncio.Event | None = None
        self.results: list[bool] = []

    async def __call__(self, name: str, trigger: str) -> bool:
        self.calls.append((name, trigger))
        if self.gate is not None:
            await self.gate.wait()
        return self.results.pop(0) if self.results else True


@pytest.fixture
async def setup() -> AsyncIterator[tuple[FakeTime, Runs, Debouncer]]:
    time, runs = FakeTime(), Runs()
    debouncer = Debouncer("d", runs, 5.0, retry_delay_s=60.0, clock=time.clock,
                          sleep=time.sleep)
    debouncer.start()
    await settle()
    yield time, runs, debouncer
    await debouncer.stop()


async def test_a_burst_gives_one_run_after_the_quiet_window(
        setup: tuple[FakeTime, Runs, Debouncer]) -> None:
    time, runs, debouncer = setup
    for _ in range(4):  # four notifications, a second apart
        debouncer.poke()
        await time.advance(1)
    assert runs.calls == []  # the last came at 3 s: the run is due at 8 s, not 5 s
    await time.advance(3.5)
    assert runs.calls == []
    await time.advance(0.5)
    assert runs.calls == [("d", TRIGGER)]
    await time.advance(120)
    assert len(runs.calls) == 1 and not debouncer.pending


async def test_notifications_during_a_run_give_exactly_one_more(
        setup: tuple[FakeTime, Runs, Debouncer]) -> None:
    time, runs, debouncer = setup
    runs.gate = asyncio.Event()
    debouncer.poke()
    await time.advance(5)
    assert len(runs.calls) == 1 and debouncer.running
    for _ in range(3):
        debouncer.poke()
        await time.advance(1)
    await time.advance(30)
    assert len(runs.calls) == 1  # still in the first run
    runs.gate.set()
    await settle()
    await time.advance(30)
    assert len(runs.calls) == 2
    await time.advance(120)
    assert len(runs.calls) == 2 and debouncer.runs == 2


async def test_a_steady_stream_still_runs_at_the_longest_delay(
        setup: tuple[FakeTime, Runs, Debouncer]) -> None:
    time, runs, debouncer = setup
    assert debouncer.max_delay_s == 50
    for _ in range(24):  # every 4 s, always inside the 5 s window
        debouncer.poke()
        await time.advance(4)
    assert len(runs.calls) == 1  # at 50 s after the first poke, not never


async def test_a_failed_run_is_tried_again_after_the_retry_delay(
        setup: tuple[FakeTime, Runs, Debouncer]) -> None:
    time, runs, debouncer = setup
    runs.results = [False]
    debouncer.poke()
    await time.advance(5)
    assert len(runs.calls) == 1 and debouncer.pending
    await time.advance(59)
    assert len(runs.calls) == 1
    await time.advance(1)
    assert len(runs.calls) == 2
    await time.advance(120)
    assert len(runs.calls) == 2


async def test_a_recovery_in_the_window_names_the_run_and_its_retry(
        setup: tuple[FakeTime, Runs, Debouncer]) -> None:
    time, runs, debouncer = setup
    debouncer.poke()
    debouncer.poke(Recovery.GAP)  # the first recovery names the run
    debouncer.poke(Recovery.ERROR)
    debouncer.poke()
    await time.advance(5)
    assert runs.calls == [("d", "subscription:gap")]
    runs.results = [False]
    debouncer.poke()  # a plain window again
    await time.advance(5)
    assert runs.calls[-1] == ("d", TRIGGER)
    runs.results = [False]
    debouncer.poke(Recovery.MISSING)
    await time.advance(5)
    assert runs.calls[-1] == ("d", "subscription:missing") and debouncer.pending
    await time.advance(60)  # the retry is the same recovery
    assert runs.calls[-1] == ("d", "subscription:missing") and not debouncer.pending
    assert [r.trigger for r in Recovery] == [
        "subscription:gap", "subscription:status", "subscription:heartbeat",
        "subscription:error", "subscription:missing"]
