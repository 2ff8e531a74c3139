"""Disclosure primitives: threshold bits, guarded openings, the exact range check."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import ConfigError
from dic_connector.node.analyses import disclosure
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share

INT64 = st.integers(-(2**63), 2**63 - 1)


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=0, max_size=20), st.integers(1, 2**40))
def test_at_least_matches_plaintext(counts: list[int], k: int) -> None:
    counts = [*counts, k - 1, k, k + 1]

    async def program(s: Session, x: AShare) -> Any:
        return await disclosure.at_least(s, x, k)

    results = run(program, share(as_ring(counts)))
    expected = [c >= k for c in counts]
    for r in results:
        assert r.tolist() == expected


def test_open_allowed_opens_only_selected_and_nothing_when_none() -> None:
    values = [3, -4, 10, 2**62]

    async def program(s: Session, x: AShare, mask: Any) -> Any:
        before = s.steps
        out = await disclosure.open_allowed(s, x, mask)
        return out, s.steps - before

    views = share(as_ring(values))
    mask = np.array([False, True, False, True])
    for out, steps in run(program, views, [mask] * 3):
        assert out == [-4, 2**62] and steps == 1
    for out, steps in run(program, views, [np.zeros(4, dtype=bool)] * 3):
        assert out == [] and steps == 0  # no message at all


@st.composite
def ranges(draw: st.DrawFn) -> tuple[list[int], int, int]:
    low = draw(st.integers(-(2**62), 2**62))
    width = draw(st.integers(1, 2**63))
    high = min(low + width - 1, 2**63 - 1)
    edges = st.sampled_from([low, high, low - 1, high + 1, 0, -(2**63), 2**63 - 1,
                             low - 2**63, high + 2**63])
    values = draw(st.lists(INT64 | edges, min_size=1, max_size=12))
    return [((v + 2**63) % 2**64) - 2**63 for v in values], low, high


@settings(max_examples=40, deadline=None)
@given(ranges())
def test_all_within_is_exact_for_every_int64(case: tuple[list[int], int, int]) -> None:
    values, low, high = case

    async def program(s: Session, x: AShare) -> Any:
        return await disclosure.all_within(s, x, low, high)

    results = run(program, share(as_ring(values)))
    assert results == [all(low <= v <= high for v in values)] * 3


def test_all_within_empty_and_bad_range() -> None:
    async def program(s: Session, x: AShare) -> Any:
        return await disclosure.all_within(s, x, 0, 10)

    assert run(program, share(as_ring(np.zeros(0, dtype=np.int64)))) == [True] * 3
    with pytest.raises(ValueError):
        asyncio.run(disclosure.all_within(None, share(as_ring([1]))[0], 5, 4))  # type: ignore[arg-type]


def test_public_share_and_helpers() -> None:
    views = [disclosure.public_share(i, [7, -2]) for i in range(3)]
    assert to_signed(reconstruct(*views)).tolist() == [7, -2]
    assert disclosure.suppressed(5) == "<5"
    assert disclosure.overflow_bound(1) == 2**62
    assert disclosure.overflow_bound(10**6) == 2**43
    for bad in (0, -1, True, 2.0, 2**62):
        with pytest.raises(ConfigError, match="min_cell_count"):
            disclosure.check_min_cell_count(bad)  # type: ignore[arg-type]
    assert disclosure.check_min_cell_count(np.int64(5)) == 5  # type: ignore[arg-type]
