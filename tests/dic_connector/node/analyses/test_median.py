"""median v1 against numpy (``np.median`` = R type 7 at p = 1/2) and the reference rules.

Key ranges and suppression too. Every run checks the three releases are equal and the
transcript against the independent spy (``support.observed``).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.median import Median, key_range
from mpc.protocols.sort import index_bits
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Case,
    Segments,
    Table,
    assert_transcript_matches,
    cases,
    observed,
    run,
    spy_openings,
)

MEDIAN = Median()


def widest(rows: int) -> tuple[int, int]:
    """The key range used without declared bounds."""
    half = 1 << (62 - index_bits(max(rows, 1)))
    return -half, half - 1


def check(case: Case, scale: int = 0) -> None:
    table = Table().numeric("x", case.values, scale=scale, present=case.indicator)
    got, seen = observed(MEDIAN, table, {"column": "x"}, case.rules, case.segments)
    expected = reference.median(case.values, scale, case.segments, case.rules,
                                case.indicator)
    reference.assert_release(got, seen, expected, case.segments, case.rules)
    if expected.refusal is None:
        # keys reach 2^55: float64 would round them before numpy sees them, so numpy
        # works in extended precision (64-bit mantissa on x86-64, exact for these)
        present = np.array([v for v in case.values if v is not None], dtype=np.longdouble)
        assert got.aggregates["median"] == pytest.approx(
            float(np.median(present) / np.longdouble(10**scale)), rel=1e-12, abs=1e-300)
        assert seen.sort_bits > 0 or len(case.values) == 1


#: Keys safe for any table of at most 64 rows.
LOW, HIGH = widest(64)
VALUE = st.integers(-1000, 1000) | st.integers(LOW, HIGH) | st.sampled_from(
    [0, LOW, HIGH, LOW + 1, HIGH - 1])


@settings(max_examples=25, deadline=None)
@given(cases(VALUE), st.integers(0, 3))
def test_median_matches_numpy_and_the_reference(case: Case, scale: int) -> None:
    check(case, scale)


@pytest.mark.parametrize("values, k", [
    ([5], 1), ([0, 0, 0, 0], 1), ([-7, -3, -3, -9], 2), ([1, 2], 2), ([4, 1, 3, 2], 3),
    ([None, 3, None, 1, 2, None, None], 3), ([None, 3, None, 1, 2, None, None], 4),
    ([], 1), ([None, None], 1), ([None, 9], 1), ([None, 9], 2),
])
def test_edges(values: list[int | None], k: int) -> None:
    """n = 1, 2, even and odd, ties, missing values, the empty table."""
    segments: Segments = (("site", len(values)),)
    check(Case(values, segments, Rules.of(k), any(v is None for v in values)), scale=1)


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5), (0, 3)])
def test_threshold_and_what_is_opened(n: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [None] * 5 + [3 * i - 4 for i in range(n)]
    seen = spy_openings(monkeypatch)
    got, _ = observed(MEDIAN, Table().numeric("x", values), {"column": "x"}, Rules(k, 1))
    assert_transcript_matches(got.transcript, seen)
    if n < k:
        assert got.aggregates["suppressed"] is True
        assert seen.bits == [[int(n < 1), 1, 0]] and seen.arith == [] and seen.sort_bits == 0
    else:
        present = sorted(v for v in values if v is not None)
        assert seen.bits == [[0, 0, 0], [1]]  # the query set, then the key range check
        assert seen.arith == [[n], [present[(n - 1) // 2] + present[n // 2]]]
        assert seen.sort_bits > 0
        sort = [o for o in got.transcript if o.name.startswith("sort")]
        assert len(sort) == 1 and sort[0].elements == seen.sort_bits


def test_declared_range_gives_narrow_keys_and_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [655, None, 302, 1199, 0, 410, None, 777, None, None, None]
    info = ColumnInfo("age", "numeric", "age", scale=1, minimum=0.0, maximum=120.0)
    assert key_range(info, len(values)) == (0, 1200, True)
    seen = spy_openings(monkeypatch)
    table = Table().numeric("age", values, scale=1, minimum=0, maximum=120)
    got, _ = observed(MEDIAN, table, {"column": "age"}, 5)
    assert got.aggregates == {"n": 6, "median": 53.25}
    assert seen.bits == [[0, 0, 0]]  # only the query set: the declared range is trusted
    segments: Segments = (("site", len(values)),)
    expected = reference.median(values, 1, segments, Rules.of(5), True, range_checked=False)
    reference.assert_release(got, seen, expected, segments, Rules.of(5))


def test_date_column_and_half_declared_range() -> None:
    values: list[int | None] = [10, 20, 30, 40, 45, 60]
    table = Table().numeric("fu", values, kind="date", minimum=0)
    assert run(MEDIAN, table, {"column": "fu"}, 5) == {"n": 6, "median": 35.0}
    low, high, trusted = key_range(ColumnInfo("fu", "date", "fu", minimum=0.0), 6)
    assert (low, high, trusted) == (0, widest(6)[1], False)


def test_values_outside_the_key_range_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 7
    low, high = widest(rows)
    seen = spy_openings(monkeypatch)
    for bad in (high + 1, low - 1, 2**63 - 1, -(2**63)):
        table = Table().numeric("x", [1, 2, bad, 4, 5, 6, 7])
        with pytest.raises(DataValidationError, match="sort key range"):
            run(MEDIAN, table, {"column": "x"}, 5)
    assert seen.arith == [] and seen.sort_bits == 0
    assert seen.bits == [[0]] * 4  # only the all-in-range bit, each time
    values: list[int | None] = [low, high, low, high, high, 0, 1]
    check(Case(values, (("site", rows),), Rules.of(5), indicator=False), scale=2)


def test_declared_bounds_violated_are_refused_when_checked() -> None:
    """A declared minimum alone is not trusted: values below it are caught under MPC."""
    table = Table().numeric("x", [5, 6, -1, 8, 9], minimum=0)
    with pytest.raises(DataValidationError):
        run(MEDIAN, table, {"column": "x"}, 5)


def test_declared_range_that_cannot_fit_the_key() -> None:
    info = ColumnInfo("x", "numeric", "x", minimum=2.0**62, maximum=2.0**62)
    with pytest.raises(AnalysisError, match="does not fit"):
        key_range(info, 10)
