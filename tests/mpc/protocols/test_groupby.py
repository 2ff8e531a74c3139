"""Group-by counts against numpy, on three loopback parties; the views of the rotation one-hot
protocol (every party's draws and received messages) against the simulation argument of its
module docstring."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpc.errors import ProtocolError
from mpc.prg import Prg
from mpc.protocols import groupby
from mpc.ring import as_ring, to_signed
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct, share
from tests.mpc.protocols import views


def run(program: Any, *args: Any) -> list[Any]:
    return asyncio.run(run_local(program, *args))


def frequency(x: np.ndarray, levels: list[int]) -> np.ndarray:
    return np.array([(x == v).sum() for v in levels], dtype=np.uint64)


async def _count(s: Session, x: AShare, levels: list[int]) -> Any:
    before = s.steps
    return await groupby.count_by(s, x, levels), s.steps - before


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-3, 6), min_size=1, max_size=80))
def test_count_by_matches_plaintext(values: list[int]) -> None:
    levels = list(range(-3, 7))
    x = np.array(values)
    results = run(_count, share(as_ring(x)), [levels] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), frequency(x, levels))
    # ten dense levels: the one-hot by rotation (2 rounds), then a local sum
    assert {r[1] for r in results} == {2}


@pytest.mark.parametrize("levels,values", [
    ([0], [0, 0, 0]),
    ([5, 1000], [1000, 5, 5]),
    ([-(2**40), 0, 2**40], [0, 2**40, -(2**40), 0]),
    (list(range(10)), [9]),
    ([2, 3, 4], [2, 2, 2, 2]),  # levels that never occur
])
def test_count_by_edges(levels: list[int], values: list[int]) -> None:
    x = np.array(values, dtype=np.int64)
    results = run(_count, share(as_ring(x)), [levels] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), frequency(x, levels))


def test_chunks_add_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(groupby, "CHUNK_CELLS", 64)
    rng = np.random.default_rng(4)
    x, y = rng.integers(0, 10, 500), rng.integers(1, 4, 500)
    levels, levels_y = list(range(10)), [1, 2, 3]
    results = run(_count, share(as_ring(x)), [levels] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), frequency(x, levels))
    table = run(_count2, share(as_ring(x)), share(as_ring(y)), [levels] * 3, [levels_y] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in table)), contingency(x, y, levels,
                                                                           levels_y))


async def _count2(s: Session, x: AShare, y: AShare, lx: list[int], ly: list[int]) -> Any:
    before = s.steps
    return await groupby.count_by2(s, x, lx, y, ly), s.steps - before


def contingency(x: np.ndarray, y: np.ndarray, lx: list[int], ly: list[int]) -> np.ndarray:
    return np.array([[((x == a) & (y == b)).sum() for b in ly] for a in lx], dtype=np.uint64)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(-1, 1)), min_size=1, max_size=60))
def test_count_by2_matches_plaintext(rows: list[tuple[int, int]]) -> None:
    x = np.array([a for a, _ in rows])
    y = np.array([b for _, b in rows])
    lx, ly = [0, 1, 2, 3, 4], [-1, 0, 1]
    results = run(_count2, share(as_ring(x)), share(as_ring(y)), [lx] * 3, [ly] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), contingency(x, y, lx, ly))
    # both one-hots by rotation (2 rounds), one product reshare 1
    assert {r[1] for r in results} == {3}


def test_errors() -> None:
    one = share(as_ring([1]))
    with pytest.raises(ProtocolError, match="empty column"):
        run(_count, share(as_ring(np.zeros(0, dtype=np.int64))), [[1]] * 3)
    with pytest.raises(ProtocolError, match="at least one declared level"):
        run(_count, one, [[]] * 3)
    with pytest.raises(ProtocolError, match="distinct"):
        run(_count, one, [[1, 1]] * 3)
    with pytest.raises(ProtocolError, match="differ in length"):
        run(_count2, one, share(as_ring([1, 2])), [[1]] * 3, [[1]] * 3)


async def _weighted(s: Session, x: AShare, y: AShare, w: AShare, lx: list[int],
                    ly: list[int]) -> Any:
    return (await groupby.count_by(s, x, lx, weights=w),
            await groupby.count_by2(s, x, lx, y, ly, weights=w))


@pytest.mark.parametrize("chunk", [64, groupby.CHUNK_CELLS])
def test_weights_filter_and_group_sums(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(groupby, "CHUNK_CELLS", chunk)
    rng = np.random.default_rng(8)
    x, y = rng.integers(0, 4, 200), rng.integers(0, 2, 200)
    lx, ly = [0, 1, 2, 3], [0, 1]
    for w in (rng.integers(0, 2, 200), rng.integers(-50, 50, 200)):  # filter, value column
        results = run(_weighted, share(as_ring(x)), share(as_ring(y)), share(as_ring(w)),
                      [lx] * 3, [ly] * 3)
        sums = to_signed(reconstruct(*(r[0] for r in results)))
        table = to_signed(reconstruct(*(r[1] for r in results)))
        assert list(sums) == [int(w[x == a].sum()) for a in lx]
        assert table.tolist() == [[int(w[(x == a) & (y == b)].sum()) for b in ly] for a in lx]


def test_weights_must_match_rows() -> None:
    with pytest.raises(ProtocolError, match="one value per row"):
        run(_weighted, share(as_ring([1, 2])), share(as_ring([1, 2])), share(as_ring([1])),
            [[1, 2]] * 3, [[1, 2]] * 3)


@pytest.mark.parametrize("chunk", [64, groupby.CHUNK_CELLS])
def test_several_weight_vectors_at_once(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    """Weights (n, W): W tables from one zero test, each equal to its own weighted table
    (64-bit values wrap mod 2^64)."""
    monkeypatch.setattr(groupby, "CHUNK_CELLS", chunk)
    rng = np.random.default_rng(9)
    x, y = rng.integers(0, 3, 150), rng.integers(0, 4, 150)
    lx, ly = [0, 1, 2], [0, 1, 2, 3]
    w = np.stack([rng.integers(0, 2, 150).astype(np.uint64),
                  rng.integers(0, 1 << 64, 150, dtype=np.uint64),
                  rng.integers(0, 7, 150).astype(np.uint64)], axis=1)
    results = run(_weighted, share(as_ring(x)), share(as_ring(y)), share(w), [lx] * 3, [ly] * 3)
    sums = reconstruct(*(r[0] for r in results))
    table = reconstruct(*(r[1] for r in results))
    assert sums.shape == (3, 3) and table.shape == (3, 3, 4)
    for j in range(3):
        assert sums[j].tolist() == [int(np.sum(w[x == a, j], dtype=np.uint64)) for a in lx]
        assert table[j].tolist() == [[int(np.sum(w[(x == a) & (y == b), j], dtype=np.uint64))
                                      for b in ly] for a in lx]


async def _one_hots(s: Session, columns: list[tuple[AShare, list[int]]]) -> Any:
    before = s.steps
    return await groupby.one_hots(s, columns), s.steps - before


def _levels(draw: Any) -> list[int]:
    levels: list[int] = draw(st.one_of(
        st.lists(st.integers(-40, 40), min_size=1, max_size=12, unique=True),  # dense-ish
        st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=4, unique=True)))
    return levels


@st.composite
def _columns(draw: Any) -> tuple[int, list[tuple[list[int], list[int]]]]:
    rows = draw(st.integers(1, 40))
    out = []
    for _ in range(draw(st.integers(1, 3))):
        levels = _levels(draw)
        out.append((levels, draw(st.lists(st.sampled_from(levels), min_size=rows,
                                          max_size=rows))))
    return rows, out


@settings(max_examples=30, deadline=None)
@given(_columns())
def test_one_hots_match_plaintext(case: tuple[int, list[tuple[list[int], list[int]]]]
                                  ) -> None:
    _, columns = case
    shared = [share(as_ring(np.array(values, dtype=np.int64))) for _, values in columns]
    per_party = [[(shared[c][i], columns[c][0]) for c in range(len(columns))]
                 for i in range(3)]
    results = run(_one_hots, per_party)
    for c, (levels, values) in enumerate(columns):
        got = reconstruct(*(r[0][c] for r in results))
        want = (np.array(values)[:, None] == np.array(levels)[None, :]).astype(np.uint64)
        assert got.shape == want.shape
        assert np.array_equal(got, want)
    dense = any(groupby.rotates(levels) for levels, _ in columns)
    sparse = not all(groupby.rotates(levels) for levels, _ in columns)
    assert len({r[1] for r in results}) == 1
    if dense and not sparse:
        assert results[0][1] == 2


def test_rotation_is_dense_only() -> None:
    assert groupby.rotates(list(range(100)))  # 128 slots
    assert groupby.rotates([0, 1])
    assert groupby.rotates([0, 15])  # 16 slots: the minimum
    assert not groupby.rotates([5, 1000])
    assert not groupby.rotates(list(range(0, 200, 3)))  # 256 slots for 67 levels


def test_one_hot_shares_are_fresh() -> None:
    x = share(as_ring(np.arange(8) % 3))
    first = run(_one_hots, [[(x[i], [0, 1, 2])] for i in range(3)])
    second = run(_one_hots, [[(x[i], [0, 1, 2])] for i in range(3)])
    assert np.array_equal(reconstruct(*(r[0][0] for r in first)),
                          reconstruct(*(r[0][0] for r in second)))
    assert not any(np.array_equal(a[0][0].a, b[0][0].a) for a, b in zip(first, second, strict=True))


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([5, 1000]), st.integers(0, 20)), min_size=1,
                max_size=50))
def test_count_by2_sparse_and_dense(rows: list[tuple[int, int]]) -> None:
    x = np.array([a for a, _ in rows])
    y = np.array([b for _, b in rows])
    lx, ly = [5, 1000], list(range(21))
    results = run(_count2, share(as_ring(x)), share(as_ring(y)), [lx] * 3, [ly] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in results)), contingency(x, y, lx, ly))
    counts = run(_count, share(as_ring(x)), [lx] * 3)
    assert np.array_equal(reconstruct(*(r[0] for r in counts)), frequency(x, lx))



# --- Views of the rotation protocol (issue 14) -------------------------------------------
#
# Passive security (Araki et al., CCS 2016): what party i holds after the protocol (its
# PRG draws, the messages it received, its output shares) must be simulatable from its
# input and output shares. The rotation is affine over Z_2^64 in the random draws once i's
# inputs are fixed, so the checks of tests/mpc/protocols/views.py apply (low bits of the
# view uniform on the same affine subspace for two inputs). A dropped mask, one draw used
# twice (two columns, two chunks) or a mask the receiver holds each fails them whenever
# the leaked one-hot bits differ.


def _rotations(levels: list[int]) -> views.RunOnce:
    """One run: a batch of two copies of the column and then a batch of one (as the next
    chunk of rows would be)."""
    async def run_once(s: Session, xs: AShare) -> list[Any]:
        hots = await groupby.one_hots(s, [(xs, levels), (xs, levels)])
        return hots + await groupby.one_hots(s, [(xs, levels)])

    return run_once


def _defects(drawn: views.Drawn, levels: list[int], first: list[int], second: list[int],
             runs: int) -> dict[int, list[str]]:
    """Which view checks (:mod:`tests.mpc.protocols.views`) each party fails."""
    return views.defects(drawn, _rotations(levels),
                         lambda party, data: views.fixing(party, data, seed=party),
                         first, second, runs)


def _view_dimension(levels: list[int], rows: int) -> int:
    """Uniform words of each party's view, in draws and received words: 3 one-hots of
    ``rows`` x 2^k slots (R), y_0 and y_1 (L words a row each); see the module docstring."""
    return 3 * rows * (1 << groupby.level_bits(levels)) + 6 * rows * len(levels)


@pytest.mark.parametrize("levels,first,second", [
    ([0, 1, 2, 3], [0], [3]),  # one row; the ends of the range; 4 levels fill 2^2 slots
    ([0, 1, 2], [1, 1], [0, 2]),  # all rows at one level, or two levels
    ([-2, -1, 0, 1, 2], [-2, 2], [7, -(2**40)]),  # 8 slots; values outside the levels
    ([0, 1], [0, 0], [1, 0]),  # binary: k = 1, 2 slots
])
def test_rotation_views_do_not_depend_on_the_data(
        drawn: views.Drawn, levels: list[int], first: list[int],
        second: list[int]) -> None:
    """Each party's view, for two inputs of one shape and the same shares of its own, is
    the same distribution: received words uniform and independent of the party's draws,
    and the same affine space of low bits for both inputs (module comment above)."""
    assert groupby.rotates(levels)
    dimension = _view_dimension(levels, len(first))
    seen = views.views(drawn, _rotations(levels), views.fixing(0, first, seed=0), 2)
    n, slots, width = len(first), 1 << groupby.level_bits(levels), len(levels) * len(first)
    # party 0 draws R, y_1 and y_0 and receives nothing; party 1 draws R and y_1 and
    # receives beta; party 2 draws y_0 and receives Z and alpha (3 columns in 2 batches)
    assert [(v.drawn.shape[1], v.received.shape[1]) for v in seen] == [
        (3 * (n * slots + width) + 3 * width, 0), (3 * (n * slots + width), 3 * width),
        (3 * width, 3 * (n * slots + width))]
    assert all(v.drawn.shape[1] + v.received.shape[1] == dimension for v in seen)
    defects = _defects(drawn, levels, first, second, dimension + views.RUNS_BEYOND)
    assert defects == {0: [], 1: [], 2: []}


def _zero_masks(prg: Prg, shapes: Any) -> list[np.ndarray]:
    prg.ring(sum(int(np.prod(shape)) for shape in shapes))  # keeps the PRGs in step
    return [np.zeros(shape, dtype=np.uint64) for shape in shapes]


def _one_mask_for_all(prg: Prg, shapes: Any) -> list[np.ndarray]:
    flat = prg.ring(max(int(np.prod(shape)) for shape in shapes))
    return [flat[:int(np.prod(shape))].reshape(shape) for shape in shapes]


@pytest.mark.parametrize("broken", [_zero_masks, _one_mask_for_all])
def test_rotation_view_check_catches_broken_masks(
        monkeypatch: pytest.MonkeyPatch, drawn: views.Drawn,
        broken: Any) -> None:
    """The view checks fail for parties 1 and 2 when the rotation's masks are dropped, or
    one draw serves both columns of a batch (and the mask and the output share y_1); party
    0 receives nothing and stays clean."""
    monkeypatch.setattr(groupby, "_draw", broken)
    levels = [0, 1, 2, 3]
    defects = _defects(drawn, levels, [1], [3], _view_dimension(levels, 1) + views.RUNS_BEYOND)
    assert defects[0] == []
    assert defects[1] and defects[2]
