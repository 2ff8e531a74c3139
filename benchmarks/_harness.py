"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any


async def timed(reps: int, op: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Median wall time of ``reps`` awaits of ``op()``, and the last result."""
    times, result = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = await op()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result
