"""count v1 against the plaintext reference of the rules, on three loopback parties.

Every run checks that the three releases are equal and that the transcript is what the
independent spy saw opened (``support.observed``); the reference says what must be
released and which bits and values must be opened, in order.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Rules
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

COUNT = Count()


def check(case: Case, column: bool) -> None:
    table = Table().numeric("x", case.values, present=case.indicator)
    parameters = {"column": "x"} if column else {}
    got, seen = observed(COUNT, table, parameters, case.rules, case.segments)
    expected = reference.count(case.values if column else None, case.segments, case.rules,
                               case.indicator)
    reference.assert_release(got, seen, expected, case.segments, case.rules)


@settings(max_examples=30, deadline=None)
@given(cases(st.integers(-5, 5)))
def test_count_matches_the_reference(case: Case) -> None:
    check(case, column=True)
    check(case, column=False)


@pytest.mark.parametrize("present, missing, k", [
    (4, 0, 5), (5, 0, 5), (6, 0, 5),          # n at k - 1, k, k + 1
    (5, 4, 5), (5, 5, 5), (5, 1, 5),          # complement at k - 1, k, 1
    (0, 3, 1), (1, 0, 1), (0, 0, 1), (0, 7, 5),
])
def test_edges(present: int, missing: int, k: int) -> None:
    """n = 0, 1, k - 1, k, k + 1; missing values at 0, 1, k - 1, k; the empty table."""
    values: list[int | None] = [1] * present + [None] * missing
    segments: Segments = (("site", len(values)),)
    check(Case(values, segments, Rules.of(k), indicator=True), column=True)
    check(Case(values, segments, Rules.of(k), indicator=True), column=False)


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5), (0, 5)])
def test_a_count_below_k_is_never_opened(n: int, k: int,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [1] * n + [None] * 7
    seen = spy_openings(monkeypatch)
    got, _ = observed(COUNT, Table().numeric("x", values), {"column": "x"}, Rules(k, 1))
    assert_transcript_matches(got.transcript, seen)
    assert seen.bits == [[int(n < 1), int(n < k), 0]]  # site >= m, n >= k, 7 missing >= k
    if n >= k:
        assert got.aggregates == {"n": n} and seen.arith == [[n]]
    else:
        assert got.aggregates["suppressed"] is True and seen.arith == []
        assert [(o.kind, o.elements) for o in got.transcript] == [("bits", 3)]


def test_column_without_indicator_counts_every_row_and_opens_nothing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    table = Table().numeric("x", [1, 2, 3, 4, 5, 6]).categorical("g", ["a", "b"], ["a"] * 6)
    seen = spy_openings(monkeypatch)
    for parameters in ({"column": "x"}, {"column": "g"}, {}):
        got, _ = observed(COUNT, table, parameters, 5)
        assert got.aggregates == {"n": 6} and got.transcript == ()
    assert seen.openings == []  # the row count is public
    assert COUNT.columns({"column": "x"}, table.inputs()[0].manifest) == []


def test_categorical_with_missing_counts_present_rows() -> None:
    values = ["a", None, "b", "b", None, "a", "a"]
    table = Table().categorical("g", ["a", "b"], values)
    assert run(COUNT, table, {"column": "g"}, Rules(2, 1)) == {"n": 5}  # 2 missing, k = 2
    assert run(COUNT, table, {"column": "g"}, Rules(1, 1)) == {"n": 5}
    for k in (3, 5):  # 2 missing values: the complement rule refuses
        assert "complement rule" in run(COUNT, table, {"column": "g"}, Rules(k, 1))["reason"]
    assert COUNT.columns({"column": "g"}, table.inputs()[0].manifest) == ["g__present"]


def test_pooled_over_segments() -> None:
    values: list[int | None] = [None if i % 3 == 0 else i for i in range(12)]
    table = Table().numeric("x", values)
    assert run(COUNT, table, {"column": "x"}, 3, segments=(("a", 5), ("b", 7))) == {"n": 8}
    assert run(COUNT, table, {}, 3, segments=(("a", 5), ("b", 7))) == {"n": 12}
