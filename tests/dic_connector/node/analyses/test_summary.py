"""summary v1 against numpy, the stdlib's exact statistics and the plaintext reference of the rules, overflow bound
included. Every run checks the three releases are equal and the transcript against the
independent spy (``support.observed``)."""

from __future__ import annotations

import statistics
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.summary import Summary, sample_variance, square_bound
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Case,
    Segments,
    Table,
    cases,
    observed,
    run,
)

SUMMARY = Summary()
#: Values safe for any table of at most 64 rows (the strategies' largest).
SAFE = square_bound(64)


def check(case: Case, scale: int = 0, kind: str = "numeric") -> None:
    table = Table().numeric("x", case.values, scale=scale, kind=kind, present=case.indicator)
    got, seen = observed(SUMMARY, table, {"column": "x"}, case.rules, case.segments)
    expected = reference.summary(case.values, scale, case.segments, case.rules,
                                 case.indicator)
    reference.assert_release(got, seen, expected, case.segments, case.rules)
    if expected.refusal is None:
        present = np.array([v for v in case.values if v is not None], dtype=np.float64)
        x = present / 10**scale
        out = got.aggregates
        assert out["n"] == x.size
        assert out["mean"] == pytest.approx(float(np.mean(x)), rel=1e-9, abs=1e-9)
        if x.size > 1:
            exact = statistics.variance([Fraction(int(v), 10**scale) for v in present])
            assert out["variance"] == float(exact)  # the stdlib, in exact fractions
            assert out["variance"] == pytest.approx(float(np.var(x, ddof=1)), rel=1e-6,
                                                    abs=1e-9)
            assert out["sd"] == pytest.approx(float(np.std(x, ddof=1)), rel=1e-6, abs=1e-9)
        else:
            assert out["variance"] is None and out["sd"] is None


VALUE = st.integers(-1000, 1000) | st.integers(-SAFE, SAFE) | st.sampled_from(
    [0, 1, -1, SAFE, -SAFE])


@settings(max_examples=30, deadline=None)
@given(cases(VALUE), st.integers(0, 3), st.sampled_from(["numeric", "date"]))
def test_summary_matches_numpy_statistics_and_the_reference(case: Case, scale: int,
                                                       kind: str) -> None:
    check(case, scale, kind)


@pytest.mark.parametrize("values, k", [
    ([7], 1), ([0, 0, 0], 1), ([-3, -5, -8], 3), ([7, None], 1), ([], 1), ([None], 1),
    ([1, 2, 3, 4, None], 4), ([1, 2, 3, 4, None], 5), ([5, 5, 5, 5, 5], 5),
    ([1, 2, 3, 4, 5] + [None] * 5, 5),
])
def test_edges(values: list[int | None], k: int) -> None:
    segments: Segments = (("site", len(values)),)
    check(Case(values, segments, Rules.of(k), any(v is None for v in values)), scale=2)


def test_pooled_over_two_sites_is_the_pooled_statistic() -> None:
    a, b = [41, 57, 63, 70, 72, 80], [38, 45, 49, 66, 91]
    out = run(SUMMARY, Table().numeric("x", a + b), {"column": "x"}, Rules.of(5),
              (("tm", 6), ("tr", 5)))
    assert out["variance"] == pytest.approx(float(np.var(a + b, ddof=1)), rel=1e-12)
    assert out["sum_of_squares"] == str(sum(v * v for v in a + b))


def test_a_value_beyond_the_square_bound_fails_without_opening_it() -> None:
    big = square_bound(6) + 1
    with pytest.raises(DataValidationError, match="sum of squares over 6 rows"):
        run(SUMMARY, Table().numeric("x", [big, 1, 2, 3, 4, 5]), {"column": "x"}, 5)


def test_a_declared_range_skips_the_check() -> None:
    table = Table().numeric("x", [10, 20, 30, 40, 50])
    table.entries[0]["minimum"], table.entries[0]["maximum"] = 0, 100
    got, seen = observed(SUMMARY, table, {"column": "x"}, Rules.of(5))
    assert [o.kind for o in seen.openings] == ["values", "values", "values"]  # no range bit
    assert got.aggregates["variance"] == 250.0


def test_sample_variance_is_exact() -> None:
    assert sample_variance(1, 5, 25, 0) is None
    assert sample_variance(2, 3, 5, 0) == 0.5  # values 1 and 2
    assert sample_variance(2, 300, 50000, 2) == 0.5  # 1.00 and 2.00 at scale 2
