"""mean v1 against numpy and the plaintext reference of the rules, overflow bound included.

Every run checks the three releases are equal and the transcript against the independent
spy (``support.observed``).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.disclosure import Rules, overflow_bound
from dic_connector.node.analyses.mean import Mean, decimal_string
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

MEAN = Mean()
#: Values safe for any table of at most 64 rows (the strategies' largest).
SAFE = overflow_bound(64)


def check(case: Case, scale: int = 0, kind: str = "numeric") -> None:
    table = Table().numeric("x", case.values, scale=scale, kind=kind, present=case.indicator)
    got, seen = observed(MEAN, table, {"column": "x"}, case.rules, case.segments)
    expected = reference.mean(case.values, scale, case.segments, case.rules, case.indicator)
    reference.assert_release(got, seen, expected, case.segments, case.rules)
    if expected.refusal is None:
        present = np.array([v for v in case.values if v is not None], dtype=np.int64)
        assert got.aggregates["n"] == present.size
        assert int(got.aggregates["sum"].replace(".", "")) == int(np.sum(present))
        floats = present.astype(np.float64) / 10**scale
        # numpy sums in float64: allow its rounding error (cancellation of large values)
        slack = 1e-12 * float(np.mean(np.abs(floats))) + 1e-12
        assert got.aggregates["mean"] == pytest.approx(float(np.mean(floats)), rel=1e-12,
                                                       abs=slack)


VALUE = st.integers(-1000, 1000) | st.integers(-SAFE, SAFE - 1) | st.sampled_from(
    [0, 1, -1, SAFE - 1, -SAFE])


@settings(max_examples=30, deadline=None)
@given(cases(VALUE), st.integers(0, 4), st.sampled_from(["numeric", "date"]))
def test_mean_matches_numpy_and_the_reference(case: Case, scale: int, kind: str) -> None:
    check(case, scale, kind)


@pytest.mark.parametrize("values, k", [
    ([7], 1), ([0, 0, 0], 1), ([-3, -5, -8], 3), ([2**40, 2**40, -1], 2),  # no indicator
    ([7, None], 1), ([None, 7], 2), ([], 1), ([None], 1),                    # n = 1, empty
    ([1, 2, 3, 4, None], 4), ([1, 2, 3, 4, None], 5), ([1, 2, 3, 4, 5, None], 5),
    ([1, 2, 3, 4, 5] + [None] * 4, 5), ([1, 2, 3, 4, 5] + [None] * 5, 5),
])
def test_edges(values: list[int | None], k: int) -> None:
    segments: Segments = (("site", len(values)),)
    indicator = any(v is None for v in values)
    check(Case(values, segments, Rules.of(k), indicator), scale=2)


def test_sum_is_an_exact_decimal_string() -> None:
    table = Table().numeric("x", [2**62 // 8, 2**62 // 8, 3, 1, 1], scale=2)
    out = run(MEAN, table, {"column": "x"}, 5)
    assert out["sum"] == "11529215046068469.81"  # 2^60 + 5 at scale 2: beyond float's 2^53
    assert out["mean"] == float(Fraction(2**60 + 5, 500))
    assert decimal_string(0, 3) == "0.000" and decimal_string(-1234, 2) == "-12.34"
    for value, scale in ((0, 3), (-1234, 2), (5, 0), (-5, 3), (10**20 + 7, 4)):
        assert decimal_string(value, scale) == reference.decimal_text(value, scale)


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5)])
def test_refused_mean_opens_nothing_but_the_bits(n: int, k: int,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [10 * i + 1 for i in range(n)] + [None] * 5
    seen = spy_openings(monkeypatch)
    got, _ = observed(MEAN, Table().numeric("x", values), {"column": "x"}, k)
    assert_transcript_matches(got.transcript, seen)
    if n < k:
        assert got.aggregates["suppressed"] is True
        assert seen.bits == [[1, 1, 0]] and seen.arith == []  # site, pooled, complement
    else:
        total = sum(10 * i + 1 for i in range(n))
        assert seen.bits == [[0, 0, 0], [1]]  # the query set, then the overflow range
        assert seen.arith == [[n], [total]]
        assert got.aggregates == {"n": n, "sum": str(total), "mean": total / n}


def test_value_beyond_the_overflow_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 6
    bound = overflow_bound(rows)
    seen = spy_openings(monkeypatch)
    for bad in (bound, -bound - 1, 2**63 - 1, -(2**63)):
        table = Table().numeric("x", [1, 2, 3, bad, 5, 6])
        with pytest.raises(DataValidationError, match="cannot overflow"):
            run(MEAN, table, {"column": "x"}, 5)
    assert seen.arith == []  # neither n nor the sum was opened
    assert seen.bits == [[0]] * 4  # only the all-in-range bit, each time
    for good in (bound - 1, -bound):
        values: list[int | None] = [good] * rows
        check(Case(values, (("site", rows),), Rules.of(5), indicator=False))


def test_declared_range_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [30, 41, None, 77, 65, 18, None, None, None, None]
    seen = spy_openings(monkeypatch)
    table = Table().numeric("age", values, scale=1, minimum=0, maximum=120)
    got, _ = observed(MEAN, table, {"column": "age"}, 5)
    segments: Segments = (("site", len(values)),)
    expected = reference.mean(values, 1, segments, Rules.of(5), True, range_checked=False)
    reference.assert_release(got, seen, expected, segments, Rules.of(5))
    assert got.aggregates["mean"] == pytest.approx(4.62)
    assert seen.bits == [[0, 0, 0]]  # only the query set: the declared range is trusted
