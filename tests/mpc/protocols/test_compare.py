"""Comparison, equality, selection, min and max against plaintext, on loopback parties."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.protocols import compare
from mpc.randomness import Correlated
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share
from tests.mpc.protocols import views

HALF = 2**62
#: Signed values whose differences stay within the documented domain |x - y| < 2^63.
domain = st.integers(min_value=-HALF, max_value=HALF - 1)
EDGES = [0, 1, -1, HALF - 1, -HALF, 2**31, -(2**31), 7, 7]


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


def signed(views: list[AShare]) -> np.ndarray:
    return to_signed(reconstruct(*views))


async def _both(s: Session, x: AShare, y: AShare) -> Any:
    start = s.steps
    lt = await compare.less_than(s, x, y)
    middle = s.steps
    eq = await compare.equals(s, x, y)
    return lt, eq, middle - start, s.steps - middle


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(domain, domain), max_size=25), st.integers(0, 24))
def test_less_than_and_equals_match_plaintext(pairs: list[tuple[int, int]], dup: int) -> None:
    xs = [a for a, _ in pairs] + EDGES + [HALF - 1, -HALF, -HALF]
    ys = [b for _, b in pairs] + EDGES[::-1] + [-HALF, HALF - 1, -HALF]
    if pairs:
        ys[dup % len(pairs)] = xs[dup % len(pairs)]  # equal values
    x, y = np.array(xs, dtype=np.int64), np.array(ys, dtype=np.int64)
    results = run(_both, share(as_ring(x)), share(as_ring(y)))
    assert np.array_equal(signed([r[0] for r in results]), (x < y).astype(np.int64))
    assert np.array_equal(signed([r[1] for r in results]), (x == y).astype(np.int64))
    assert {(r[2], r[3]) for r in results} == {(8, 8)}


def test_all_equal_and_single_element() -> None:
    for x in (np.full(17, -5), np.array([3])):
        results = run(_both, share(as_ring(x)), share(as_ring(x)))
        assert not signed([r[0] for r in results]).any()
        assert signed([r[1] for r in results]).all()


def test_equality_is_exact_on_the_whole_ring() -> None:
    x = as_ring([0, 2**64 - 1, 2**63, 5, 2**63])
    y = as_ring([2**63, 2**64 - 1, 0, 5 + 2**32, 2**63])
    results = run(_both, share(x), share(y))
    assert list(signed([r[1] for r in results])) == [0, 1, 0, 0, 1]


@pytest.mark.parametrize("k", [2, 8, 16, 40])
def test_declared_small_domains(k: int) -> None:
    rng = np.random.default_rng(k)
    lim = 2 ** (k - 2)
    x = rng.integers(-lim, lim, 300)
    c = int(rng.integers(-lim, lim))
    x[:3] = [c, -lim, lim - 1]

    async def program(s: Session, v: AShare) -> Any:
        return (await compare.less_than_public(s, v, c, bits=k),
                await compare.equals_public(s, v, c, bits=k),
                await compare.greater_equal_public(s, v, c, bits=k))

    results = run(program, share(as_ring(x)))
    for j, expected in enumerate([x < c, x == c, x >= c]):
        assert np.array_equal(signed([r[j] for r in results]), expected.astype(np.int64))


def test_public_arrays_broadcast_to_a_table() -> None:
    x = np.array([3, 0, 9, 3, -2])
    levels = np.array([0, 3, 9])

    async def program(s: Session, v: AShare) -> Any:
        col = v.reshape(-1, 1)
        return (await compare.equals_public(s, col, levels),
                await compare.less_than_public(s, col, levels))

    results = run(program, share(as_ring(x)))
    eq = signed([r[0] for r in results])
    lt = signed([r[1] for r in results])
    assert np.array_equal(eq, (x[:, None] == levels).astype(np.int64))
    assert np.array_equal(lt, (x[:, None] < levels).astype(np.int64))


def test_empty_inputs_give_empty_results_and_bad_widths_fail() -> None:
    empty = np.zeros(0, dtype=np.int64)
    results = run(_both, share(as_ring(empty)), share(as_ring(empty)))
    assert reconstruct(*(r[0] for r in results)).shape == (0,)
    with pytest.raises(ProtocolError, match="equal shapes"):
        run(_both, share(as_ring([1, 2])), share(as_ring([1])))

    async def program(s: Session, v: AShare) -> Any:
        return await compare.less_than_public(s, v, 0, bits=1)

    with pytest.raises(ProtocolError, match="comparison width"):
        run(program, share(as_ring([1])))


def test_select() -> None:
    b = np.array([1, 0, 1, 0])
    x = np.array([-5, 6, 2**40, 0])
    y = np.array([9, -9, 1, 2**62])

    async def program(s: Session, bb: AShare, xx: AShare, yy: AShare) -> AShare:
        return await compare.select(s, bb, xx, yy)

    out = run(program, share(as_ring(b)), share(as_ring(x)), share(as_ring(y)))
    assert list(signed(out)) == [-5, -9, 2**40, 2**62]


async def _min_max(s: Session, x: AShare) -> Any:
    return await compare.min_(s, x), await compare.max_(s, x)


@settings(max_examples=15, deadline=None)
@given(st.lists(domain, min_size=1, max_size=20))
def test_min_max_tournament(values: list[int]) -> None:
    x = np.array(values, dtype=np.int64)
    results = run(_min_max, share(as_ring(x)))
    assert int(signed([r[0] for r in results])) == x.min()
    assert int(signed([r[1] for r in results])) == x.max()


def test_min_max_edges_and_rows() -> None:
    for x in (np.array([4]), np.full(5, -3), np.array([HALF - 1, -HALF, 0])):
        results = run(_min_max, share(as_ring(x)))
        assert int(signed([r[0] for r in results])) == x.min()
        assert int(signed([r[1] for r in results])) == x.max()
    table = np.array([[3, -1, 7], [0, 0, 0], [-8, 5, 2]])
    results = run(_min_max, share(as_ring(table)))
    assert list(signed([r[0] for r in results])) == list(table.min(axis=1))
    assert list(signed([r[1] for r in results])) == list(table.max(axis=1))


def test_min_of_empty_array_is_an_error() -> None:
    with pytest.raises(ProtocolError, match="empty"):
        run(_min_max, share(as_ring(np.zeros(0, dtype=np.int64))))


@pytest.mark.parametrize("k", [1, 3, 4, 9, 64])
@pytest.mark.parametrize("n", [1, 33, 300])
def test_equality_tree_at_awkward_sizes(k: int, n: int) -> None:
    """Sizes that are not multiples of the packing (64 // K values per word, halved words
    per tree level) must come out in the right order."""
    rng = np.random.default_rng(n * 100 + k)
    nonzero = rng.integers(1, 2**min(k, 62), n)
    x = np.where(rng.integers(0, 2, n) == 1, nonzero, 0)  # about half zeros

    async def program(s: Session, v: AShare) -> Any:
        return await compare.equals_public(s, v, 0, bits=k)

    results = run(program, share(as_ring(x)))
    assert np.array_equal(signed(results), (x == 0).astype(np.int64))


# --- Views of the comparison and equality circuits (issue 14) -----------------------------
#
# Passive security (Araki et al., CCS 2016; ABY3 for the three-party OT): with a party's
# input shares fixed, every message of the generate/propagate round, of the AND trees and of
# the bit injection is its inputs' constants plus PRG words, by XOR or by addition, so the
# checks of tests/mpc/protocols/views.py apply: each party's view (draws, received words,
# output shares) has the same distribution for two inputs whose result differs. Small
# widths keep the view's dimension (and so the runs) small; they run the same circuits
# (packed fields, fewer carry levels) as 64 bits.


def _circuit(protocol: Any, bits: int) -> views.RunOnce:
    async def run_once(s: Session, inputs: tuple[AShare, AShare]) -> list[AShare]:
        return [await protocol(s, inputs[0], inputs[1], bits=bits)]

    return run_once


def _pairs(party: int, data: tuple[list[int], list[int]]) -> list[tuple[AShare, AShare]]:
    """Both operands shared with ``party``'s own shares fixed (one seed per operand)."""
    x, y = (views.fixing(party, values, seed=2 * party + t) for t, values in enumerate(data))
    return list(zip(x, y, strict=True))


@pytest.mark.parametrize("protocol,bits,first,second", [
    (compare.less_than, 8, ([3], [5]), ([5], [3])),  # the result flips
    (compare.less_than, 8, ([0], [0]), ([-64], [63])),  # equal; the domain's ends
    (compare.less_than, 16, ([-1, 7], [0, 7]), ([2**14, -7], [-(2**14), 7])),
    (compare.equals, 4, ([3], [3]), ([3], [4])),
    (compare.equals, 16, ([0, 9], [0, -9]), ([2**15, 9], [0, 9])),
])
def test_comparison_views_do_not_depend_on_the_data(
        drawn: views.Drawn, protocol: Any, bits: int, first: tuple[list[int], list[int]],
        second: tuple[list[int], list[int]]) -> None:
    run_once = _circuit(protocol, bits)
    dimension = max(views.dimension(drawn, run_once, _pairs(0, first)))
    defects = views.defects(drawn, run_once, _pairs, first, second,
                            dimension + views.RUNS_BEYOND)
    assert defects == {0: [], 1: [], 2: []}


def test_comparison_view_check_catches_an_unmasked_and(
        monkeypatch: pytest.MonkeyPatch, drawn: views.Drawn) -> None:
    """AND gates without their zero-sharing hand the next party x_i y_i ^ ...: the views
    then differ (the PRGs stay in step, as both holders skip the draws)."""
    monkeypatch.setattr(Correlated, "xor_zero_share", lambda self, z: z)
    run_once = _circuit(compare.less_than, 8)
    first, second = ([3], [5]), ([5], [3])
    dimension = max(views.dimension(drawn, run_once, _pairs(0, first)))
    defects = views.defects(drawn, run_once, _pairs, first, second,
                            dimension + views.RUNS_BEYOND)
    assert all("received words not independent of the party's draws" in d
               for d in defects.values()), defects
