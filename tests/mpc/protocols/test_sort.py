"""Shuffle-then-sort, rank selection and quantiles against numpy, on loopback parties."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import sort
from mpc.ring import FixedPoint, as_ring, to_signed
from mpc.session import Reveal, Session, run_local
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


@contextlib.contextmanager
def sampled_selection(window_sigmas: float = 4.0, chunk: int = 7) -> Iterator[None]:
    """Sample selection, the composite-only shuffle and chunked comparisons from tiny sizes
    on, so that small inputs take the paths large ones take."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sort, "SAMPLE_SELECT_MIN", 8)
        mp.setattr(sort, "SHUFFLE_COMPOSITE_ONLY_MIN", 1)
        mp.setattr(sort, "COMPARISON_CHUNK", chunk)
        mp.setattr(sort, "WINDOW_SIGMAS", window_sigmas)
        yield


SMALL_KEY_BITS = 5
small_keys = st.integers(-(2 ** (SMALL_KEY_BITS - 1)), 2 ** (SMALL_KEY_BITS - 1) - 1)


@settings(max_examples=25, deadline=None)
@given(st.lists(small_keys | st.sampled_from([0, -1, -16, 15]), min_size=1, max_size=150),
       st.lists(st.floats(0, 1), min_size=1, max_size=5),
       st.sampled_from([0.0, 0.5, 4.0]), st.sampled_from([1, 7, 1 << 20]))
def test_sample_selection_matches_numpy(values: list[int], where: list[float],
                                        sigmas: float, chunk: int) -> None:
    """Order statistics by sample selection at the key range's edges, with ties, n = 1,
    repeated ranks and windows so narrow (0 sigmas) that targets fall outside them."""
    x = np.array(values, dtype=np.int64)
    ranks = [min(len(x) - 1, int(w * len(x))) for w in where]

    async def program(s: Session, xs: AShare) -> AShare:
        return await sort.select_ranks(s, xs, ranks, key_bits=SMALL_KEY_BITS)

    with sampled_selection(sigmas, chunk):
        out = signed(run(program, share(as_ring(x))))
    assert list(out) == list(np.sort(x)[ranks])


def test_sample_selection_quantiles_and_empty_ranks() -> None:
    rng = np.random.default_rng(3)
    with sampled_selection():
        for values in (np.array([2.5]), np.full(40, -3.25), np.array([-1000.0, 1000.0]),
                       rng.normal(0, 300, 500).clip(-1000, 1000)):
            check_quantiles(values)

        async def program(s: Session, xs: AShare) -> AShare:
            return await sort.select_ranks(s, xs, [], key_bits=KEY_BITS)

        assert signed(run(program, share(as_ring(np.arange(30))))).shape == (0,)


def test_sample_selection_opens_fewer_comparisons_than_random_pivots() -> None:
    """The median of 40 000 rows: random pivots compare 4-7 times per row, pivots from a
    sample ~1.5 times plus the sample's and the window's own selections (here without the
    minimum comparisons per level, which at this size would dominate both)."""
    x = np.random.default_rng(5).integers(-(2**20), 2**20, 40_000)
    opened: dict[str, int] = {}

    def counting(name: str) -> Any:
        async def program(s: Session, xs: AShare) -> AShare:
            def count(reveal: Reveal) -> None:
                opened[name] = opened.get(name, 0) + reveal.elements
            s.watch_reveals(count)
            return await sort.select_ranks(s, xs, [len(x) // 2], key_bits=22)
        return program

    shares = share(as_ring(x))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sort, "MIN_COMPARISONS_PER_LEVEL", 1)
        mp.setattr(sort, "SAMPLE_SELECT_MIN", len(x) + 1)
        random_pivots = signed(run(counting("random"), shares))
        mp.setattr(sort, "SAMPLE_SELECT_MIN", 4096)
        sampled = signed(run(counting("sampled"), shares))
    assert random_pivots[0] == sampled[0] == np.sort(x)[len(x) // 2]
    # each of the three parties counts the same openings; random pivots open 3 n on the
    # first level alone
    assert opened["sampled"] < 2.8 * len(x) * 3 < 3 * len(x) * 3 < opened["random"]


def test_search_table_splits_by_weight() -> None:
    table = sort._search_table(np.array([100.0, 1.0, 100.0]))
    assert table[0, 2] in (0, 1) and table[0, 1] == 0 and table[1, 2] == 1
    # the heavy outer buckets of a median settle after one comparison on either side
    weights = np.array([500.0, 3.0, 500.0, 3.0, 500.0])
    table = sort._search_table(weights)
    for lo in range(5):
        for hi in range(lo + 1, 5):
            assert lo <= table[lo, hi] < hi
    assert table[0, 4] in (1, 2)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 10**7), st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_sample_ranks_lie_in_the_sample(m: int, where: list[float]) -> None:
    size = min(m, int(np.ceil((2.0 * m) ** (2 / 3))))
    local = np.unique([min(m - 1, int(w * m)) for w in where])
    ranks = sort._sample_ranks(m, size, local)
    assert np.all((ranks >= 0) & (ranks < size)) and np.all(np.diff(ranks) > 0)


@pytest.mark.parametrize(("m", "t"), [(100_000, 50_000), (100_000, 0), (100_000, 99_999),
                                      (3_000_000, 750_000), (70_000, 17)])
def test_sample_ranks_bracket_the_target_in_a_random_sample(m: int, t: int) -> None:
    """In random samples (seeded) the bucket the target falls in, between the pivots next
    to it, is a small part of the segment: the target was not missed by its window."""
    rng = np.random.default_rng(t)
    size = min(m, int(np.ceil((2.0 * m) ** (2 / 3))))
    ranks = sort._sample_ranks(m, size, np.array([t]))
    for _ in range(200):
        sample = np.sort(rng.choice(m, size, replace=False))  # ranks of the sampled rows
        pivots = sample[ranks]
        below, above = pivots[pivots < t], pivots[pivots >= t]
        low = below.max() if below.size else -1
        high = above.min() if above.size else m
        assert high - low < m / 8  # a miss leaves a bucket of about m / 2
