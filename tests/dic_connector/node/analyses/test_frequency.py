"""frequency v1 against numpy and the plaintext reference of primary and secondary suppression.

Suppressed cells are never opened; every run checks the three releases are equal and the
transcript against the independent spy (``support.observed``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.frequency import Frequency
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

FREQUENCY = Frequency()
LEVELS = ["a", "b", "c", "d"]


def check(case: Case, levels: list[str] = LEVELS) -> dict[str, Any]:
    table = Table().categorical("g", levels, case.values, present=case.indicator)
    got, seen = observed(FREQUENCY, table, {"column": "g"}, case.rules, case.segments)
    expected = reference.frequency(case.values, levels, case.segments, case.rules,
                                   case.indicator)
    reference.assert_release(got, seen, expected, case.segments, case.rules)
    if expected.refusal is None:
        # numpy cross-check of the opened cells
        codes = np.array([levels.index(v) for v in case.values if v is not None],
                         dtype=np.int64)
        counts = np.bincount(codes, minlength=len(levels))
        marks = set(got.aggregates["levels"].values())
        for level, count in zip(levels, counts, strict=True):
            shown = got.aggregates["levels"][level]
            assert shown == count or (shown == f"<{case.rules.min_cell_count}"
                                      and count < case.rules.min_cell_count) or (
                shown == "suppressed" and count >= case.rules.min_cell_count) or (
                marks == {"hidden"})  # no count open: no marks at all
        opened = [v for v in got.aggregates["levels"].values() if isinstance(v, int)]
        assert sorted(seen.arith_values) == sorted(opened)
    return got.aggregates


@settings(max_examples=40, deadline=None)
@given(cases(st.sampled_from(LEVELS), max_rows=14))
def test_frequency_matches_the_reference(case: Case) -> None:
    check(case)


@st.composite
def skewed(draw: st.DrawFn) -> Case:
    """Tables whose cells sit at k - 1, k, k + 1 (and 0), with missing values at 0..k."""
    k = draw(st.integers(2, 6))
    cells = draw(st.lists(st.sampled_from([0, 1, k - 1, k, k + 1, 2 * k]), min_size=4,
                          max_size=4))
    missing = draw(st.sampled_from([0, 1, k - 1, k]))
    values: list[str | None] = [lv for lv, c in zip(LEVELS, cells, strict=True)
                                for _ in range(c)] + [None] * missing
    values = draw(st.permutations(values))
    return Case(values, (("site", len(values)),), Rules(k, 1), indicator=True)


@settings(max_examples=40, deadline=None)
@given(skewed())
def test_secondary_suppression_matches_the_reference(case: Case) -> None:
    check(case)


def test_counts_at_k_minus_one_k_and_k_plus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of 4, 5, 6 and 0 with k = 5 and 5 missing values: the 4 and the 0 are never
    opened, and their mass 4 forces the smallest opened cell (5) to be hidden too."""
    values: list[str | None] = ["a"] * 4 + ["b"] * 5 + ["c"] * 6 + [None] * 5
    seen = spy_openings(monkeypatch)
    got, _ = observed(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 5)
    assert_transcript_matches(got.transcript, seen)
    assert got.aggregates == {"levels": {"a": "<5", "b": "suppressed", "c": 6, "d": "<5"},
                              "min_cell_count": 5}
    assert seen.bits == [[0, 0], [1, 0, 0, 1], [1, 0], [1, 0]]
    assert seen.arith == [[6]]  # exactly the allowed cell, in one opening
    assert not {4, 5, 0} & set(seen.arith_values)


def test_suppressed_cells_at_their_upper_bound_force_secondary_suppression() -> None:
    """Two levels at k - 1 = 2 and two open: with the total (15, public), a and b would sum
    to 4 = 2 x (k - 1), each exactly 2. The bound M <= (h - 1)(k - 1) hides the smallest
    opened level too; every level at k - 1 with nothing open shows no marks."""
    values: list[str | None] = ["a"] * 2 + ["b"] * 2 + ["c"] * 5 + ["d"] * 6
    out = check(Case(values, (("site", len(values)),), Rules(3, 1), False))
    assert out["levels"] == {"a": "<3", "b": "<3", "c": "suppressed", "d": 6}
    values = [lv for lv in LEVELS for _ in range(2)]
    out = check(Case(values, (("site", len(values)),), Rules(3, 1), False))
    assert out["levels"] == dict.fromkeys(LEVELS, "hidden")


def test_no_secondary_suppression_when_the_masses_are_safe() -> None:
    values: list[str | None] = ["a"] * 5 + ["b"] * 5 + ["c"] * 6 + [None] * 5
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 5)
    assert out["levels"] == {"a": 5, "b": 5, "c": 6, "d": "<5"}  # d = 0: mass 0


def test_missing_values_alone_force_secondary_suppression() -> None:
    """Every cell is opened, but N - (opened) = 2 missing values: the smallest is hidden."""
    values: list[str | None] = ["a"] * 7 + ["b"] * 5 + ["c"] * 6 + ["d"] * 5 + [None] * 2
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 5)
    assert out["levels"] == {"a": 7, "b": "suppressed", "c": 6, "d": 5}  # first of the 5s


def test_a_single_opened_cell_is_hidden_without_a_minimum(
        monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[str | None] = [*(["a"] * 3), *(["c"] * 9)]
    seen = spy_openings(monkeypatch)
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 5)
    # c hidden too, so no count is open: no marks
    assert out["levels"] == dict.fromkeys(LEVELS, "hidden")
    assert seen.bits == [[1, 1, 0, 1], [1, 1]] and seen.arith == []  # sizes are public


def test_all_suppressed_opens_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_openings(monkeypatch)
    values: list[str | None] = ["a", "b", "b", "c", None, None, None, None, None]
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, Rules(3, 1))
    # no count open: no marks (with '<3' on all four, 8 rows would pin each at 2)
    assert out == {"levels": dict.fromkeys(LEVELS, "hidden"), "min_cell_count": 3}
    assert seen.arith == [] and seen.bits == [[0, 0], [1, 1, 1, 1]]


@pytest.mark.parametrize("values, k, indicator", [
    ([], 1, True), ([None, None], 1, True), (["a"], 1, True), (["a"], 1, False),
    (["a", None], 1, True), (["a", "a", None], 2, True), (["b"] * 6, 3, False),
    (["a"] * 3 + ["b"] * 3, 3, False), ([], 1, False),
])
def test_edges(values: list[str | None], k: int, indicator: bool) -> None:
    """Empty, only missing, n = 1, no missing indicator."""
    segments: Segments = (("site", len(values)),)
    check(Case(values, segments, Rules.of(k), indicator))


def test_missing_rows_are_not_counted_even_if_one_hot_set() -> None:
    """The product with the present flag enforces the filter whatever the encoding."""
    table = Table().categorical("g", ["x", "y"], ["x"] * 6 + ["y"] * 6)
    table.entries.append({"name": "g__present", "kind": "present", "column": "g",
                          "scale": 0})
    table.values["g__present"] = np.array([1] * 6 + [1, 0, 0, 0, 0, 1], dtype=np.int64)
    out = run(FREQUENCY, table, {"column": "g"}, Rules(2, 1))
    assert out == {"levels": {"x": 6, "y": 2}, "min_cell_count": 2}


def test_single_level_and_columns() -> None:
    table = Table().categorical("g", ["only"], ["only"] * 5, present=True)
    assert run(FREQUENCY, table, {"column": "g"}, 5) == {"levels": {"only": 5},
                                                         "min_cell_count": 5}
    manifest = table.inputs()[0].manifest
    assert FREQUENCY.columns({"column": "g"}, manifest) == ["g=only", "g__present"]
