"""``t_test`` v1 against ``scipy.stats.ttest_ind(equal_var=False)`` on three loopback parties:
groups by a boolean, a two-level categorical or two filters, a filter, missing values, ties
and negative values, the alternatives, the edges (a one-row group, constant groups),
refusals naming the group, the overflow check and the opening transcript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.summary import square_bound
from dic_connector.node.analyses.ttest import TTest, welch
from tests.dic_connector.node.analyses.support import Table, observed, run

TTEST = TTest()


def check(
    got: dict[str, Any],
    a: Sequence[float],
    b: Sequence[float],
    alternative: str,
    labels: tuple[str, str],
) -> None:
    """The release is scipy's Welch test of a against b (exact sums: float rounding only)."""
    reference = stats.ttest_ind(a, b, equal_var=False, alternative=alternative)
    assert [g["group"] for g in got["groups"]] == list(labels)
    assert [g["n"] for g in got["groups"]] == [len(a), len(b)]
    for group, values in zip(got["groups"], (a, b), strict=True):
        assert group["mean"] == pytest.approx(float(np.mean(values)), rel=1e-12, abs=1e-12)
        assert group["variance"] == pytest.approx(float(np.var(values, ddof=1)), rel=1e-9)
    assert got["mean_difference"] == pytest.approx(np.mean(a) - np.mean(b), abs=1e-12)
    assert got["t"] == pytest.approx(float(reference.statistic), rel=1e-9)
    assert got["df"] == pytest.approx(float(reference.df), rel=1e-9)
    assert got["p"] == pytest.approx(float(reference.pvalue), rel=1e-9, abs=1e-15)
    assert got["alternative"] == alternative


@pytest.mark.parametrize(
    "seed, n, alternative, scale",
    [(1, 24, "two-sided", 0), (2, 40, "less", 2), (3, 17, "greater", 1), (4, 60, "two-sided", 3)],
)
def test_by_a_boolean_matches_scipy_with_missing_values(
    seed: int, n: int, alternative: str, scale: int
) -> None:
    rng = np.random.default_rng(seed)
    encoded = rng.integers(-300, 300, n) * 10 ** max(scale - 1, 0)  # ties, negatives
    x: list[int | None] = [int(v) for v in encoded]
    arm: list[bool | None] = [bool(v) for v in rng.random(n) < 0.5]
    for i in rng.choice(n, 3, replace=False):
        x[i] = None
    arm[int(rng.integers(n))] = None
    got = run(
        TTEST,
        Table().numeric("x", x, scale=scale).boolean("arm", arm),
        {"column": "x", "by": "arm", "alternative": alternative},
        Rules(1, 1),
    )
    pairs = [
        (v / 10**scale, g) for v, g in zip(x, arm, strict=True) if v is not None and g is not None
    ]
    check(
        got,
        [v for v, g in pairs if g],
        [v for v, g in pairs if not g],
        alternative,
        ("true", "false"),
    )


def test_groups_as_filters_with_a_filter_over_two_sites() -> None:
    rng = np.random.default_rng(7)
    n = 50
    x = [int(v) for v in rng.normal(60, 12, n).round()]
    dose = [int(v) for v in rng.integers(40, 120, n)]
    sex = [str(v) for v in rng.choice(["f", "m"], n)]
    groups = [
        {"label": "low", "filter": {"op": "<", "column": "dose", "value": 80}},
        {"label": "high", "filter": {"op": ">=", "column": "dose", "value": 80}},
    ]
    only = {"op": "==", "column": "sex", "value": "f"}
    table = Table().numeric("x", x).numeric("dose", dose).categorical("sex", ["f", "m"], sex)
    got = run(
        TTEST,
        table,
        {"column": "x", "groups": groups, "filter": only},
        Rules(3, 2),
        (("tm", 30), ("tr", 20)),
    )
    keep = [i for i in range(n) if sex[i] == "f"]
    check(
        got,
        [x[i] for i in keep if dose[i] < 80],
        [x[i] for i in keep if dose[i] >= 80],
        "two-sided",
        ("low", "high"),
    )


def test_by_a_two_level_categorical_and_what_opens() -> None:
    """The transcript: each group's gate (the query set, all rows, is public), then n, sum
    and sum of squares per group, exactly what two ``summary`` releases open (the declared
    range skips the range bit)."""
    a, b = [41, 57, 63, 70, 72, 80], [38, 45, 49, 66, 91]
    table = (
        Table()
        .numeric("age", a + b, minimum=0, maximum=120)
        .categorical("ecog", ["0-1", "2"], ["0-1"] * 6 + ["2"] * 5)
    )
    got, seen = observed(TTEST, table, {"column": "age", "by": "ecog"}, Rules(5, 1))
    check(got.aggregates, a, b, "two-sided", ("0-1", "2"))
    query = "each contributor's query set >= 1; n >= 5; rows outside it 0 or >= 5"
    assert [(o.name, o.kind, o.elements) for o in got.transcript] == [
        (query, "bits", 3),
        (query, "bits", 3),
        ("group '0-1': n", "values", 1),
        ("group '0-1': sum", "values", 1),
        ("group '0-1': sum of squares", "values", 1),
        ("group '2': n", "values", 1),
        ("group '2': sum", "values", 1),
        ("group '2': sum of squares", "values", 1),
    ]
    assert seen.arith_values == [6, sum(a), sum(v * v for v in a), 5, sum(b), sum(v * v for v in b)]


def test_edges_one_row_group_and_constant_groups() -> None:
    single = run(
        TTEST,
        Table().numeric("x", [5, 1, 2, 3]).boolean("g", [True, False, False, False]),
        {"column": "x", "by": "g"},
        Rules(1, 1),
    )
    assert single["t"] is None and single["p"] is None and "single row" in single["reason"]
    assert single["groups"][0] == {
        "group": "true",
        "n": 1,
        "mean": 5.0,
        "variance": None,
        "sd": None,
    }
    constant = run(
        TTEST,
        Table().numeric("x", [4, 4, 4, 7, 7, 7]).boolean("g", [True] * 3 + [False] * 3),
        {"column": "x", "by": "g"},
        Rules(3, 1),
    )
    assert constant["t"] is None and "standard error is 0" in constant["reason"]
    assert constant["mean_difference"] == -3.0
    two = run(
        TTEST,
        Table().numeric("x", [1, 3, 2, 8]).boolean("g", [True, True, False, False]),
        {"column": "x", "by": "g"},
        Rules(2, 1),
    )
    check(two, [1, 3], [2, 8], "two-sided", ("true", "false"))


def test_refusals_name_the_group_not_its_count() -> None:
    x = list(range(20))
    groups = [
        {"label": "a", "filter": {"op": "<=", "column": "x", "value": 9}},
        {"label": "b", "filter": {"op": ">=", "column": "x", "value": 17}},
    ]
    small = run(TTEST, Table().numeric("x", x), {"column": "x", "groups": groups}, Rules(5, 1))
    assert small["suppressed"] is True and small["reason"].startswith("group 'b': ")
    assert "fewer than 5 rows" in small["reason"] and " 3 " not in small["reason"]
    both = [
        {"label": "early", "filter": {"op": "<=", "column": "x", "value": 12}},
        {"label": "late", "filter": {"op": ">=", "column": "x", "value": 8}},
    ]
    overlap = run(TTEST, Table().numeric("x", x), {"column": "x", "groups": both}, Rules(5, 1))
    assert overlap == {
        "suppressed": True,
        "reason": "t_test: the two groups overlap (a row passes both filters)",
    }
    empty = run(
        TTEST,
        Table().numeric("x", x).boolean("g", [i % 2 == 0 for i in x]),
        {"column": "x", "by": "g", "filter": {"op": ">", "column": "x", "value": 99}},
        Rules.of(5),
    )
    assert empty == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the query set",
    }


def test_a_group_s_rows_outside_the_query_set_are_a_complement() -> None:
    """count(filter=group) minus the group's n would count the group's rows that lack the
    column (or fail the filter): 1..k-1 of them refuse the test, naming the group."""
    x: list[int | None] = [None, *range(1, 20)]
    g = [i % 2 == 0 for i in range(20)]
    got = run(
        TTEST, Table().numeric("x", x).boolean("g", g), {"column": "x", "by": "g"}, Rules(1, 1)
    )
    assert [group["n"] for group in got["groups"]] == [9, 10]
    x[2] = x[4] = None  # 3 missing in group 'true', none in 'false'
    got = run(
        TTEST, Table().numeric("x", x).boolean("g", g), {"column": "x", "by": "g"}, Rules(3, 1)
    )
    assert got["groups"][0]["n"] == 7
    x[2] = x[4] = 2
    x[1] = x[3] = x[5] = None  # 1 missing in 'true', 3 in 'false': the query set passes
    got = run(
        TTEST, Table().numeric("x", x).boolean("g", g), {"column": "x", "by": "g"}, Rules(3, 1)
    )
    assert got == {
        "suppressed": True,
        "reason": "group 'true': between 1 and 2 rows of the "
        "group outside the query set; releasing the query set would disclose their "
        "number (complement rule)",
    }


def test_needs_exactly_two_groups() -> None:
    table = Table().numeric("x", [1, 2, 3]).categorical("c", ["a", "b", "c"], ["a", "b", "c"])
    manifest = table.inputs()[0].manifest
    cases: list[tuple[dict[str, Any], str]] = [
        ({"column": "x"}, r"exactly two groups.*\(got 0\)"),
        ({"column": "x", "by": "c"}, r"exactly two groups.*\(got 3\)"),
        ({"column": "x", "by": "x"}, "'x' is numeric; expected a boolean or categorical"),
        ({"column": "c", "by": "c"}, "'c' is categorical; expected a date or numeric"),
        ({"column": "x", "by": "c", "groups": []}, "parameter 'groups'"),
        ({"column": "x", "by": "c", "alternative": "two_sided"}, "parameter 'alternative'"),
    ]
    for parameters, message in cases:
        with pytest.raises(AnalysisError, match=message):
            TTEST.validate(parameters, manifest)


def test_columns_read_include_the_groups() -> None:
    table = Table().numeric("x", [1, None]).boolean("g", [True, None]).numeric("d", [1, 2])
    manifest = table.inputs()[0].manifest
    assert TTEST.columns({"column": "x", "by": "g"}, manifest) == [
        "x",
        "x__present",
        "g",
        "g__present",
    ]
    groups = [
        {"label": "a", "filter": {"op": "<", "column": "d", "value": 2}},
        {"label": "b", "filter": {"op": ">=", "column": "d", "value": 2}},
    ]
    assert TTEST.columns({"column": "x", "groups": groups}) == ["x", "d"]
    assert TTEST.typed_columns({"column": "x", "groups": groups}, manifest) == ["d", "x"]


def test_a_value_beyond_the_square_bound_fails_without_opening_it() -> None:
    big = square_bound(6) + 1
    table = Table().numeric("x", [big, 1, 2, 3, 4, 5]).boolean("g", [True, False] * 3)
    with pytest.raises(DataValidationError, match="sum of squares over 6 rows"):
        run(TTEST, table, {"column": "x", "by": "g"}, Rules(3, 1))
    edge = square_bound(6)
    values = [edge, -edge, edge, 1, 2, 3]
    got = run(
        TTEST,
        Table().numeric("x", values).boolean("g", [True] * 3 + [False] * 3),
        {"column": "x", "by": "g"},
        Rules(3, 1),
    )
    check(got, values[:3], values[3:], "two-sided", ("true", "false"))


def test_welch_in_exact_fractions() -> None:
    out = welch([(3, 6, 14), (3, 15, 77)], 0, "two-sided")  # 1, 2, 3 against 4, 5, 6
    reference = stats.ttest_ind([1, 2, 3], [4, 5, 6], equal_var=False)
    assert out["t"] == pytest.approx(reference.statistic, rel=1e-15)
    assert out["df"] == 4.0 and out["mean_difference"] == -3.0
