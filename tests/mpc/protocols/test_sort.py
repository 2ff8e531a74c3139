"""Shuffle-then-sort, rank selection and quantiles against numpy, on loopback parties."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import sort
from mpc.ring import FixedPoint, as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share

KEY_BITS = 40
keys = st.integers(min_value=-(2 ** (KEY_BITS - 1)), max_value=2 ** (KEY_BITS - 1) - 1)


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


def signed(views: list[AShare]) -> np.ndarray:
    return to_signed(reconstruct(*views))


async def _sort(s: Session, x: AShare, tags: AShare) -> Any:
    return await sort.sort(s, x, [tags], key_bits=KEY_BITS)


def check_sort(x: np.ndarray) -> None:
    tags = np.arange(len(x))
    results = run(_sort, share(as_ring(x)), share(as_ring(tags)))
    out = signed([r[0] for r in results])
    moved = signed([r[1][0] for r in results])
    assert np.array_equal(out, np.sort(x))
    assert np.array_equal(moved, np.argsort(x, kind="stable"))  # stable w.r.t. ties


@settings(max_examples=20, deadline=None)
@given(st.lists(keys | st.sampled_from([0, -1, 5]), min_size=1, max_size=60))
def test_sort_matches_numpy_and_is_stable(values: list[int]) -> None:
    check_sort(np.array(values, dtype=np.int64))


@pytest.mark.parametrize("x", [np.array([7]), np.full(9, -4), np.array([3, 3, 1, 1, 2, 2]),
                               np.array([2**39 - 1, -(2**39), 0, -(2**39), 2**39 - 1])])
def test_sort_edges(x: np.ndarray) -> None:
    check_sort(x)


def test_multi_level_quickselect(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a tiny comparison budget the sort runs many levels with few pivots each
    (k = 1 is quickselect with a random pivot); the result must not change."""
    monkeypatch.setattr(sort, "MIN_COMPARISONS_PER_LEVEL", 1)
    monkeypatch.setattr(sort, "COMPARISONS_PER_ELEMENT", 1)
    rng = np.random.default_rng(9)
    check_sort(rng.integers(-20, 20, 150))

    async def program(s: Session, x: AShare) -> Any:
        before = s.steps
        out = await sort.select_ranks(s, x, [0, 75, 149, 75])
        return out, s.steps - before

    x = rng.integers(-1000, 1000, 150)
    results = run(program, share(as_ring(x)))
    assert list(signed([r[0] for r in results])) == list(np.sort(x)[[0, 75, 149, 75]])
    assert results[0][1] > 3 + 8 * 3  # several levels were needed


def test_empty_input_and_domain_errors() -> None:
    empty = share(as_ring(np.zeros(0, dtype=np.int64)))

    async def sort_empty(s: Session, x: AShare) -> Any:
        return await sort.sort(s, x)

    async def median_empty(s: Session, x: AShare) -> Any:
        return await sort.median(s, x)

    for program in (sort_empty, median_empty):
        with pytest.raises(ProtocolError, match="at least one element"):
            run(program, empty)

    async def too_wide(s: Session, x: AShare) -> Any:
        return await sort.sort(s, x, key_bits=62)

    with pytest.raises(ProtocolError, match="at most 63"):
        run(too_wide, share(as_ring(np.arange(4))))

    async def bad_rank(s: Session, x: AShare) -> Any:
        return await sort.select_ranks(s, x, [4])

    with pytest.raises(ProtocolError, match="ranks"):
        run(bad_rank, share(as_ring(np.arange(4))))

    async def bad_prob(s: Session, x: AShare) -> Any:
        return await sort.quantiles(s, x, [1.5])

    with pytest.raises(ProtocolError, match="probabilities"):
        run(bad_prob, share(as_ring(np.arange(4))))


PROBS = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
FP = FixedPoint(16, -1000, 1000)
WEIGHT_BITS = 16


async def _quantiles(s: Session, x: AShare) -> Any:
    before = s.steps
    q = await sort.quantiles(s, x, PROBS, key_bits=KEY_BITS, weight_bits=WEIGHT_BITS)
    return q, s.steps - before


def check_quantiles(values: np.ndarray) -> int:
    encoded = FP.encode(values)
    exact = FP.decode(encoded)
    results = run(_quantiles, share(encoded))
    got = FixedPoint(16 + WEIGHT_BITS, -(2.0**30), 2.0**30).decode(reconstruct(*(r[0] for r in results)))
    expected = np.quantile(exact, PROBS, method="linear")
    spread = np.ptp(exact) if exact.size else 0.0
    # only the interpolation weight is rounded (to 2^-16): error <= spread * 2^-17
    assert np.all(np.abs(got - expected) <= spread * 2.0**-17 + 1e-9)
    return int(results[0][1])


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-999, 999, allow_nan=False), min_size=1, max_size=60))
def test_quantiles_match_numpy_type_7(values: list[float]) -> None:
    check_quantiles(np.array(values))


def test_quantiles_edges_and_rounds() -> None:
    for values in (np.array([2.5]), np.full(10, -3.25), np.array([-1000.0, 1000.0]),
                   np.linspace(-5, 5, 48)):
        steps = check_quantiles(values)
    # shuffle (3) + one level comparing all pairs at n = 48 (8 rounds incl. the opening)
    assert steps == 3 + 8


def test_median_odd_even_and_fixed_point() -> None:
    async def program(s: Session, x: AShare) -> AShare:
        return await sort.median(s, x, key_bits=KEY_BITS, weight_bits=1)

    for values, expected in (([3, 1, 2], 2.0), ([4, 1, 3, 2], 2.5), ([-7, -7, 0, 9], -3.5)):
        out = reconstruct(*run(program, share(as_ring(np.array(values)))))
        assert FixedPoint(1).decode(out)[0] == expected


def test_type7_weights() -> None:
    lo, hi, w = sort.type7_weights(5, [0, 0.5, 0.3, 1], 16)
    assert list(lo) == [0, 2, 1, 4] and list(hi) == [1, 3, 2, 4]
    assert list(w) == [0, 0, round(0.2 * 2**16), 0]


def test_key_bits_for() -> None:
    assert sort.key_bits_for(0, 0) == 1
    assert sort.key_bits_for(-1, 0) == 1
    assert sort.key_bits_for(0, 1) == 2
    assert sort.key_bits_for(-128, 127) == 8
    assert sort.key_bits_for(-129, 0) == 9
    assert sort.key_bits_for(-1000 * 2**16, 1000 * 2**16) == 27
    with pytest.raises(ProtocolError):
        sort.key_bits_for(1, 0)
