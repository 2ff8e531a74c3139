"""Source plumbing: progress snapshots and the bounded stream merge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from dic_connector.sources import (
    BulkExportConfig,
    BulkExportSource,
    FhirRestConfig,
    FhirRestSource,
    NdjsonConfig,
    NdjsonDirectorySource,
    SourceConfig,
    SqlConfig,
    SqlSource,
    make_source,
)
from dic_connector.sources.base import Progress, ProgressTracker, merge_streams


def test_progress_tracker_snapshots_are_immutable() -> None:
    seen: list[Progress] = []
    tracker = ProgressTracker(seen.append)
    tracker.item("Patient")
    tracker.item("Patient")
    tracker.item("Observation")
    tracker.update(units=1, nbytes=100, expected=10, phase="page")
    first = tracker.snapshot
    tracker.item("Observation")
    tracker.update(units=1)
    assert first == Progress(items=3, units=1, bytes=100, expected=10,
                             by_type=(("Observation", 1), ("Patient", 2)), phase="page")
    assert seen[-1].items == 4 and seen[-1].count("Observation") == 2 and seen[-1].units == 2


async def numbers(start: int, n: int, closed: list[int]) -> AsyncIterator[int]:
    try:
        for i in range(start, start + n):
            await asyncio.sleep(0)
            yield i
    finally:
        closed.append(start)


async def test_merge_yields_everything_once() -> None:
    closed: list[int] = []
    streams = [numbers(k * 1000, 300, closed) for k in range(4)]
    got = [x async for x in merge_streams(streams, max_parallel=2, buffer=8)]
    assert sorted(got) == sorted(k * 1000 + i for k in range(4) for i in range(300))
    assert sorted(closed) == [0, 1000, 2000, 3000]


async def test_merge_propagates_errors_and_stops_the_others() -> None:
    closed: list[int] = []

    async def failing() -> AsyncIterator[int]:
        yield -1
        raise ValueError("source broke")

    merged = merge_streams([numbers(0, 10_000, closed), failing()], max_parallel=2, buffer=4)
    with pytest.raises(ValueError, match="source broke"):
        async for _ in merged:
            pass
    assert closed == [0]


async def test_early_exit_cancels_producers() -> None:
    closed: list[int] = []
    merged = merge_streams([numbers(0, 10_000, closed), numbers(5, 10_000, closed)], 2, 4)
    async for x in merged:
        if x > 20:
            break
    await merged.aclose()  # type: ignore[attr-defined]
    assert sorted(closed) == [0, 5]


async def test_make_source_picks_the_implementation(tmp_path: Path) -> None:
    configs: list[SourceConfig] = [FhirRestConfig("https://fhir.example/fhir", ()),
               BulkExportConfig("https://fhir.example/fhir"), NdjsonConfig(tmp_path),
               SqlConfig("sqlite+aiosqlite:///:memory:", "SELECT 1")]
    kinds = [FhirRestSource, BulkExportSource, NdjsonDirectorySource, SqlSource]
    for config, kind in zip(configs, kinds, strict=True):
        async with make_source(config) as source:
            assert type(source) is kind and source.kind
