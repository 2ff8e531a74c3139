"""When datasets are due, and the scheduler loop that runs them."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from dic_connector.connector import schedule
from dic_connector.connector.config import DatasetConfig, Trigger, TriggerKind
from dic_connector.connector.schedule import Scheduler, next_due
from dic_connector.mapping import load_mapping
from dic_connector.sources import NdjsonConfig

REPO = Path(__file__).resolve().parents[3]
T0 = dt.datetime(2026, 12, 2, 10, 0, tzinfo=dt.UTC)
HOUR = Trigger(TriggerKind.SCHEDULE, every_s=3600)
NIGHTLY = Trigger(TriggerKind.SCHEDULE, cron="0 2 * * *")


def test_manual_is_never_due() -> None:
    assert next_due(Trigger(), T0, None) is None


def test_interval_anchored_on_the_last_start() -> None:
    assert next_due(HOUR, T0, None) == T0  # never ran: at once
    assert next_due(HOUR, T0, T0 - dt.timedelta(minutes=20)) == T0 + dt.timedelta(minutes=40)
    # missed while down: one catch-up run now, not one per missed hour
    assert next_due(HOUR, T0, T0 - dt.timedelta(hours=5)) == T0


def test_cron_in_utc() -> None:
    assert next_due(NIGHTLY, T0, None) == dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC)
    last = dt.datetime(2026, 12, 2, 2, 0, 5, tzinfo=dt.UTC)
    assert next_due(NIGHTLY, T0, last) == dt.datetime(2026, 12, 3, 2, 0, tzinfo=dt.UTC)
    # the service was down at 02:00 today: catch up now
    assert next_due(NIGHTLY, T0, last - dt.timedelta(days=1)) == T0


def dataset(name: str, trigger: Trigger) -> DatasetConfig:
    return DatasetConfig(name, load_mapping(REPO / "mappings" / "pilot_adrenal.yaml"),
                         NdjsonConfig(Path("x")), trigger)


async def test_scheduler_runs_due_datasets_and_survives_failures(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schedule, "MAX_SLEEP_S", 0.01)
    monkeypatch.setattr(schedule, "RETRY_DELAY_S", 3600.0)
    starts: dict[str, dt.datetime | None] = {"a": None, "b": None, "m": None}
    calls: list[tuple[str, str]] = []
    ran = asyncio.Event()

    async def last_start(name: str) -> dt.datetime | None:
        return starts[name]

    async def run(name: str, trigger: str) -> bool:
        calls.append((name, trigger))
        starts[name] = T0
        if len(calls) >= 2:
            ran.set()
        if name == "b":
            raise RuntimeError("a broken runner must not stop the schedule")
        return True

    scheduler = Scheduler((dataset("a", HOUR), dataset("b", HOUR), dataset("m", Trigger())),
                          last_start, run, clock=lambda: T0)
    scheduler.start()
    await asyncio.wait_for(ran.wait(), 10)
    for _ in range(20):
        await asyncio.sleep(0.01)  # several loop turns: neither dataset is due again
    await scheduler.stop()
    assert sorted(calls) == [("a", "schedule"), ("b", "schedule")]  # never the manual one
    assert scheduler.due["a"] == T0 + dt.timedelta(hours=1)
    assert scheduler.due["b"] == T0 + dt.timedelta(hours=1)  # retry delay also an hour
    assert "m" not in scheduler.due
