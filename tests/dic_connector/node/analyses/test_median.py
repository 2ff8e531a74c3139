"""median v1 against numpy (R type 7 = numpy's linear method), key ranges and suppression."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.base import ColumnInfo
from dic_connector.node.analyses.median import Median, key_range
from mpc.protocols.sort import index_bits
from tests.dic_connector.node.analyses.support import Table, run, spy_openings

MEDIAN = Median()


def widest(rows: int) -> tuple[int, int]:
    """The key range used without declared bounds."""
    half = 1 << (62 - index_bits(max(rows, 1)))
    return -half, half - 1


def reference(values: list[int | None], scale: int, k: int) -> dict[str, Any]:
    present = sorted(v for v in values if v is not None)
    n = len(present)
    if n < k:
        return {"n": f"<{k}", "suppressed": True}
    twice = present[(n - 1) // 2] + present[n // 2]
    return {"n": n, "median": float(Fraction(twice, 2 * 10**scale))}


@st.composite
def columns(draw: st.DrawFn) -> tuple[list[int | None], int]:
    rows = draw(st.integers(0, 30))
    low, high = widest(rows)
    value = st.one_of(st.integers(-1000, 1000), st.integers(low, high),
                      st.sampled_from([0, low, high, low + 1, high - 1]), st.none())
    return draw(st.lists(value, min_size=rows, max_size=rows)), draw(st.integers(0, 3))


@settings(max_examples=40, deadline=None)
@given(columns(), st.integers(1, 6))
def test_median_matches_numpy(column: tuple[list[int | None], int], k: int) -> None:
    values, scale = column
    table = Table().numeric("x", values, scale=scale, present=True)
    out = run(MEDIAN, table, {"column": "x"}, k)
    assert out == reference(values, scale, k)
    if not out.get("suppressed"):
        present = np.array([v for v in values if v is not None], dtype=np.float64)
        assert out["median"] == pytest.approx(
            float(np.quantile(present, 0.5, method="linear")) / 10**scale, rel=1e-12)


@pytest.mark.parametrize("values", [[5], [0, 0, 0, 0], [-7, -3, -3, -9], [1, 2], [4, 1, 3, 2],
                                    [None, 3, None, 1, 2, None, None]])
def test_edges(values: list[int | None]) -> None:
    table = Table().numeric("x", values, scale=1)
    out = run(MEDIAN, table, {"column": "x"}, 1)
    assert out == reference(values, 1, 1)
    present = [v for v in values if v is not None]
    assert out["median"] == pytest.approx(float(np.median(present)) / 10)


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5), (0, 3)])
def test_threshold_and_what_is_opened(n: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [None, None, *[3 * i - 4 for i in range(n)]]
    seen = spy_openings(monkeypatch)
    out = run(MEDIAN, Table().numeric("x", values), {"column": "x"}, k)
    assert out == reference(values, 0, k)
    if n < k:
        assert seen.bits == [[1]] and seen.arith == [] and seen.sort_bits == 0
    else:
        present = sorted(v for v in values if v is not None)
        assert seen.bits == [[0], [1]]  # threshold, then the key range check
        assert seen.arith == [[n], [present[(n - 1) // 2] + present[n // 2]]]
        assert seen.sort_bits > 0


def test_declared_range_gives_narrow_keys_and_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [655, None, 302, 1199, 0, 410, None, 777]
    info = ColumnInfo("age", "numeric", "age", scale=1, minimum=0.0, maximum=120.0)
    assert key_range(info, len(values)) == (0, 1200, True)
    seen = spy_openings(monkeypatch)
    table = Table().numeric("age", values, scale=1, minimum=0, maximum=120)
    out = run(MEDIAN, table, {"column": "age"}, 5)
    assert out == {"n": 6, "median": 53.25}
    assert seen.bits == [[0]]  # only the threshold bit: the declared range is trusted


def test_date_column_and_half_declared_range() -> None:
    values: list[int | None] = [10, 20, 30, None, 45, 60]
    table = Table().numeric("fu", values, kind="date", minimum=0)
    assert run(MEDIAN, table, {"column": "fu"}, 5) == {"n": 5, "median": 30.0}
    low, high, trusted = key_range(ColumnInfo("fu", "date", "fu", minimum=0.0), 6)
    assert (low, high, trusted) == (0, widest(6)[1], False)


def test_values_outside_the_key_range_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 7
    low, high = widest(rows)
    seen = spy_openings(monkeypatch)
    for bad in (high + 1, low - 1, 2**63 - 1, -(2**63)):
        table = Table().numeric("x", [1, 2, bad, 4, 5, 6, None])
        with pytest.raises(DataValidationError, match="sort key range"):
            run(MEDIAN, table, {"column": "x"}, 5)
    assert seen.arith == [] and seen.sort_bits == 0
    table = Table().numeric("x", [low, high, low, high, high, 0, None], scale=2)
    assert run(MEDIAN, table, {"column": "x"}, 5) == reference(
        [low, high, low, high, high, 0, None], 2, 5)


def test_declared_bounds_violated_are_refused_when_checked() -> None:
    """A declared minimum alone is not trusted: values below it are caught under MPC."""
    table = Table().numeric("x", [5, 6, -1, 8, 9], minimum=0)
    with pytest.raises(DataValidationError):
        run(MEDIAN, table, {"column": "x"}, 5)


def test_declared_range_that_cannot_fit_the_key() -> None:
    info = ColumnInfo("x", "numeric", "x", minimum=2.0**62, maximum=2.0**62)
    with pytest.raises(AnalysisError, match="does not fit"):
        key_range(info, 10)
