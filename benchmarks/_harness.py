"""Helpers shared by the benchmark scripts (run as ``python benchmarks/<name>.py``).

Importing this module puts the checkout it lives in first on ``sys.path``. A script run as
``python benchmarks/<name>.py`` has ``benchmarks/`` on its path but not the checkout, so
``dic_connector`` and ``mpc`` would otherwise come from wherever the virtualenv's editable
install points, which with worktrees sharing one virtualenv is another worktree: the
benchmark would silently measure code other than the code beside it. Import it before
``dic_connector`` and ``mpc`` (isort places it there, among the third-party imports).
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import ModuleType
from typing import Any


def _this_checkout_first() -> None:
    root = str(Path(__file__).resolve().parents[1])
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)


_this_checkout_first()


#: The allocator settings of the image (Dockerfile): glibc keeps freed blocks up to 32 MiB
#: in the heap, so numpy temporaries are not page-faulted in afresh on every allocation.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}


def party_env(default_malloc: bool) -> dict[str, str]:
    """The environment of a party process: the image's allocator settings, unless the
    benchmark is asked for glibc's defaults."""
    env = dict(os.environ)
    if not default_malloc:
        env.update(ALLOCATOR_ENV)
    return env


async def timed(reps: int, op: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    """Median wall time of ``reps`` awaits of ``op()``, and the last result."""
    times, result = [], None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = await op()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def load_module(path: Path, name: str) -> ModuleType:
    """The Python file ``path`` imported as module ``name`` (e.g. a test conftest's helpers)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
