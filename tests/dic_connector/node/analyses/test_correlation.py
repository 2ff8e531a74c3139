"""``correlation`` v1 against ``scipy.stats.pearsonr`` and exact integer co-moments on three
loopback parties: missing values in either column, a filter, two sites, ties and negative
values, the alternatives, the edges (n = 2, |r| = 1, a constant column), an empty filter,
the overflow bound at its boundary and the opening transcript."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from scipy import stats

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses import correlation
from dic_connector.node.analyses.correlation import Correlation, pearson, spread_bound
from dic_connector.node.analyses.disclosure import Rules
from tests.dic_connector.node.analyses.support import Table, observed, run

CORRELATION = Correlation()


def moments(u: Sequence[int], v: Sequence[int]) -> tuple[int, int, int]:
    """C, A, B of the module doc, exactly."""
    n = len(u)
    c = n * sum(a * b for a, b in zip(u, v, strict=True)) - sum(u) * sum(v)
    return c, n * sum(a * a for a in u) - sum(u) ** 2, n * sum(b * b for b in v) - sum(v) ** 2


def check(got: dict[str, Any], u: Sequence[float], v: Sequence[float], alternative: str) -> None:
    reference = stats.pearsonr(u, v, alternative=alternative)
    assert got["n"] == len(u) and got["df"] == len(u) - 2
    assert got["r"] == pytest.approx(float(reference.statistic), rel=1e-9, abs=1e-12)
    assert got["p"] == pytest.approx(float(reference.pvalue), rel=1e-7, abs=1e-12)
    r = float(reference.statistic)
    if abs(r) < 1 and len(u) > 2:
        t = r * np.sqrt((len(u) - 2) / (1 - r * r))
        assert got["t"] == pytest.approx(t, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize(
    "seed, n, alternative, scales",
    [
        (1, 30, "two-sided", (0, 0)),
        (2, 45, "less", (2, 1)),
        (3, 12, "greater", (0, 3)),
        (4, 60, "two-sided", (1, 2)),
    ],
)
def test_matches_scipy_with_missing_values_and_a_filter(
    seed: int, n: int, alternative: str, scales: tuple[int, int]
) -> None:
    rng = np.random.default_rng(seed)
    u = rng.integers(-50, 50, n)  # ties and negatives
    v = u * rng.integers(-3, 4) + rng.integers(-80, 80, n)
    x: list[int | None] = [int(a) * 10 ** scales[0] for a in u]
    y: list[int | None] = [int(b) * 10 ** scales[1] for b in v]
    for i in rng.choice(n, 3, replace=False):
        x[i] = None
    for i in rng.choice(n, 4, replace=False):
        y[i] = None
    site = [str(s) for s in rng.choice(["a", "b", "c"], n)]
    table = (
        Table()
        .numeric("x", x, scale=scales[0])
        .numeric("y", y, scale=scales[1])
        .categorical("site", ["a", "b", "c"], site)
    )
    only = {"op": "!=", "column": "site", "value": "c"}
    got = run(
        CORRELATION,
        table,
        {"columns": ["x", "y"], "filter": only, "alternative": alternative},
        Rules(1, 1),
        (("tm", n // 2), ("tr", n - n // 2)),
    )
    keep = [i for i in range(n) if x[i] is not None and y[i] is not None and site[i] != "c"]
    check(got, [float(u[i]) for i in keep], [float(v[i]) for i in keep], alternative)
    assert got["columns"] == ["x", "y"] and got["alternative"] == alternative


def test_what_opens_is_n_and_the_centred_moments() -> None:
    u, v = [3, 1, 4, 1, 5, 9, 2, 6], [2, 7, 1, 8, 2, 8, 1, 8]
    table = Table().numeric("x", u).numeric("y", v, present=True)
    got, seen = observed(CORRELATION, table, {"columns": ["x", "y"]}, Rules(5, 1))
    check(got.aggregates, u, v, "two-sided")
    gate = "each contributor's query set >= 1; n >= 5; rows outside it 0 or >= 5"
    assert [(o.name, o.kind, o.elements) for o in got.transcript] == [
        (gate, "bits", 3),
        ("every 'x' and 'y' value in [-379625062, 379625062]", "bits", 1),
        ("n", "values", 1),
        ("C = n Sxy - Sx Sy", "values", 1),
        ("A = n Sxx - Sx^2", "values", 1),
        ("B = n Syy - Sy^2", "values", 1),
    ]
    assert seen.arith_values == [8, *moments(u, v)]  # not Sx, Sy, Sxx, Syy or Sxy


def test_edges_two_rows_perfect_and_constant() -> None:
    two = run(
        CORRELATION,
        Table().numeric("x", [1, 5]).numeric("y", [4, -2]),
        {"columns": ["x", "y"]},
        Rules(2, 1),
    )
    assert (two["n"], two["r"], two["p"], two["t"]) == (2, -1.0, 1.0, None)
    check(two, [1, 5], [4, -2], "two-sided")
    line = run(
        CORRELATION,
        Table().numeric("x", [1, 2, 3, 4, 5]).numeric("y", [3, 5, 7, 9, 11]),
        {"columns": ["x", "y"]},
        Rules(5, 1),
    )
    assert (line["r"], line["p"], line["t"]) == (1.0, 0.0, None)
    constant = run(
        CORRELATION,
        Table().numeric("x", [1, 2, 3, 4, 5]).numeric("y", [7] * 5),
        {"columns": ["x", "y"]},
        Rules(5, 1),
    )
    assert constant["r"] is None and constant["p"] is None
    assert constant["reason"] == "a column is constant over the query set: r is undefined"


def test_an_empty_filter_is_refused_clearly() -> None:
    table = Table().numeric("x", list(range(10))).numeric("y", list(range(10)))
    got = run(
        CORRELATION,
        table,
        {"columns": ["x", "y"], "filter": {"op": ">", "column": "x", "value": 50}},
        Rules.of(5),
    )
    assert got == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the query set",
    }


def test_rows_with_only_one_column_present_are_a_complement() -> None:
    """1..k-1 rows with y but not x (or x but not y) would be disclosed by differencing
    with a summary of either column: refused."""
    x: list[int | None] = [None, *range(1, 12)]
    y: list[int | None] = [*range(9), None, None, None]
    got = run(
        CORRELATION, Table().numeric("x", x).numeric("y", y), {"columns": ["x", "y"]}, Rules(3, 1)
    )
    assert got == {
        "suppressed": True,
        "reason": "between 1 and 2 rows that pass the filter "
        "lack 'x'; releasing the query set would disclose their number "
        "(complement rule)",
    }
    x = [None, None, None, *range(3, 12)]
    y = [*range(10), None, 11]
    got = run(
        CORRELATION, Table().numeric("x", x).numeric("y", y), {"columns": ["x", "y"]}, Rules(3, 1)
    )
    assert got["reason"].startswith("between 1 and 2 rows where 'x' is present fail the filter")


def test_the_overflow_bound_at_its_boundary() -> None:
    """Undeclared ranges: values at +-h are exact, h + 1 fails; a declared range of width
    spread_bound(N) needs no check and A reaches 2^63 - 1's neighbourhood exactly."""
    rows = 6
    h = spread_bound(rows) // 2
    u, v = [h, -h, h, -h, 0, 1], [-h, h, 3, -h, h, 0]
    got, seen = observed(
        CORRELATION, Table().numeric("x", u).numeric("y", v), {"columns": ["x", "y"]}, Rules(5, 1)
    )
    assert seen.arith_values == [rows, *moments(u, v)]
    check(got.aggregates, u, v, "two-sided")
    with pytest.raises(DataValidationError, match="declare the columns' minima and maxima"):
        run(
            CORRELATION,
            Table().numeric("x", [h + 1, 0, 1, 2, 3, 4]).numeric("y", v),
            {"columns": ["x", "y"]},
            Rules(5, 1),
        )
    w = spread_bound(rows)
    wide = [0, w, 0, w, 0, w]
    table = (
        Table()
        .numeric("x", wide, minimum=0, maximum=w)
        .numeric("y", [1, 2, 3, 4, 5, 7], minimum=0, maximum=10)
    )
    got, seen = observed(CORRELATION, table, {"columns": ["x", "y"]}, Rules(5, 1))
    assert [o.kind for o in seen.openings] == ["values"] * 4  # no range bit
    c, a, b = moments(wide, [1, 2, 3, 4, 5, 7])
    assert seen.arith_values == [rows, c, a, b] and 2**62 < a < 2**63
    too_wide = (
        Table()
        .numeric("x", wide, minimum=0, maximum=w + 1)
        .numeric("y", [1, 2, 3, 4, 5, 7], minimum=0, maximum=10)
    )
    with pytest.raises(DataValidationError, match="column 'x' holds a value outside"):
        run(CORRELATION, too_wide, {"columns": ["x", "y"]}, Rules(5, 1))


def test_validation_and_columns_read() -> None:
    table = Table().numeric("x", [1, None]).numeric("y", [1, 2]).boolean("b", [True, False])
    manifest = table.inputs()[0].manifest
    cases: list[tuple[dict[str, Any], str]] = [
        ({"columns": ["x", "x"]}, "two different columns"),
        ({"columns": ["x", "b"]}, r"parameter 'columns/1': 'b' is boolean"),
        ({"columns": ["x", "z"]}, r"parameter 'columns/1': unknown column 'z'"),
        ({"columns": ["x"]}, "parameter 'columns'"),
        ({"columns": ["x", "y"], "method": "kendall"}, "parameter 'method'"),
        ({"columns": ["x", "y"], "rank": True}, "unknown parameter"),
    ]
    for parameters, message in cases:
        with pytest.raises(AnalysisError, match=message):
            CORRELATION.validate(parameters, manifest)
    only = {"columns": ["y", "x"], "filter": {"op": "==", "column": "b", "value": True}}
    assert CORRELATION.columns(only, manifest) == ["y", "x", "x__present", "b"]
    assert CORRELATION.columns(only) == ["y", "x", "b"]
    assert CORRELATION.typed_columns(only, manifest) == ["b", "x", "y"]


def test_pearson_from_exact_moments() -> None:
    c, a, b = moments([1, 2, 3, 4], [2, 1, 4, 3])
    out = pearson(4, c, a, b, "two-sided")
    reference = stats.pearsonr([1, 2, 3, 4], [2, 1, 4, 3])
    assert out["r"] == pytest.approx(reference.statistic, rel=1e-15)
    assert out["p"] == pytest.approx(reference.pvalue, rel=1e-12)


@pytest.mark.parametrize("seed, n, alternative", [(1, 40, "two-sided"), (2, 25, "greater")])
def test_spearman_matches_scipy_with_ties_missing_values_and_a_filter(
    seed: int, n: int, alternative: str
) -> None:
    rng = np.random.default_rng(seed)
    u = [int(v) for v in rng.integers(-5, 5, n)]  # many ties
    v = [a * 3 - int(b) for a, b in zip(u, rng.integers(-9, 9, n), strict=True)]
    x: list[int | None] = list(u)
    y: list[int | None] = list(v)
    x[3] = y[7] = None
    g = [bool(b) for b in rng.random(n) < 0.7]
    table = Table().numeric("x", x, scale=1).numeric("y", y).boolean("g", g)
    parameters = {
        "columns": ["x", "y"],
        "method": "spearman",
        "alternative": alternative,
        "filter": {"op": "==", "column": "g", "value": True},
    }
    got = run(CORRELATION, table, parameters, Rules(1, 1), (("tm", n // 2), ("tr", n - n // 2)))
    keep = [i for i in range(n) if x[i] is not None and y[i] is not None and g[i]]
    reference = stats.spearmanr([u[i] for i in keep], [v[i] for i in keep], alternative=alternative)
    assert got["n"] == len(keep) and got["method"] == "spearman"
    assert got["r"] == pytest.approx(float(reference.statistic), rel=1e-9)
    assert got["p"] == pytest.approx(float(reference.pvalue), rel=1e-7)


def test_spearman_opens_the_moments_of_the_ranks() -> None:
    u, v = [10, 20, 20, 30, 50, 40], [1, 3, 2, 2, 9, 8]
    table = Table().numeric("x", u, minimum=0, maximum=100).numeric("y", v, minimum=0, maximum=10)
    got, seen = observed(
        CORRELATION, table, {"columns": ["x", "y"], "method": "spearman"}, Rules(5, 1)
    )
    ranks = [2 * float(r) for r in stats.rankdata(u)], [2 * float(r) for r in stats.rankdata(v)]
    assert seen.arith_values == [
        6,
        *moments([int(r) for r in ranks[0]], [int(r) for r in ranks[1]]),
    ]
    assert [o.name for o in got.transcript] == [
        "sort comparison bits of obliviously shuffled rows",
        "sort comparison bits of obliviously shuffled rows",
        "n",
        "C = n Sxy - Sx Sy of the ranks",
        "A = n Sxx - Sx^2 of the ranks",
        "B = n Syy - Sy^2 of the ranks",
    ]
    assert got.aggregates["r"] == pytest.approx(stats.spearmanr(u, v).statistic, rel=1e-12)
    constant = run(
        CORRELATION,
        Table().numeric("x", u).numeric("y", [4] * 6),
        {"columns": ["x", "y"], "method": "spearman"},
        Rules(5, 1),
    )
    assert constant["r"] is None and "constant" in constant["reason"]


def test_spearman_refusals_and_its_key_range(monkeypatch: pytest.MonkeyPatch) -> None:
    table = Table().numeric("x", list(range(12))).numeric("y", list(range(12)))
    monkeypatch.setattr(correlation, "MAX_SPEARMAN_ROWS", 11)
    got = run(CORRELATION, table, {"columns": ["x", "y"], "method": "spearman"}, Rules(5, 1))
    assert got == {
        "suppressed": True,
        "reason": "correlation: spearman takes at most 11 "
        "rows (the pinned versions hold 12); its ranks would overflow the ring",
    }
    monkeypatch.undo()
    wide = Table().numeric("x", [1 << 58, *range(11)]).numeric("y", list(range(12)))
    with pytest.raises(DataValidationError, match="the range its sort keys admit"):
        run(CORRELATION, wide, {"columns": ["x", "y"], "method": "spearman"}, Rules(5, 1))
