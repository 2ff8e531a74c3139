"""``linear_regression`` v1 against ``statsmodels`` OLS on three loopback parties: pooled
over two sites, with missing values, a filter, boolean, date and scaled covariates,
declared and checked ranges; the refusals (parameter limit, a contributor below k, an empty
subset, collinear and constant covariates); the opening transcript; the parameters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import statsmodels.api as sm
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.correlation import spread_bound
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.node.analyses.regression import INTERCEPT, LinearRegression
from tests.dic_connector.node.analyses.support import Table, observed, run

REGRESSION = LinearRegression()


def check(got: dict[str, Any], y: np.ndarray, x: np.ndarray, names: list[str],
          rel: float = 5e-5) -> None:
    """The release against statsmodels OLS with an intercept on the same rows."""
    reference = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    assert got["n"] == len(y) and got["df_residual"] == int(reference.df_resid)
    assert [c["term"] for c in got["coefficients"]] == [INTERCEPT, *names]
    for c, estimate, se, p in zip(got["coefficients"], reference.params, reference.bse,
                                  reference.pvalues, strict=True):
        scale = max(abs(float(estimate)), float(se))
        assert c["estimate"] == pytest.approx(float(estimate), abs=rel * scale), c
        assert c["se"] == pytest.approx(float(se), rel=rel), c
        assert c["p"] == pytest.approx(float(p), rel=10 * rel, abs=1e-9), c
        assert c["t"] == pytest.approx(float(estimate) / float(se), rel=10 * rel, abs=rel), c
    assert got["r_squared"] == pytest.approx(float(reference.rsquared), abs=1e-6)
    assert got["adj_r_squared"] == pytest.approx(float(reference.rsquared_adj), abs=1e-6)
    assert got["residual_se"] == pytest.approx(float(np.sqrt(reference.scale)), rel=rel)


def test_matches_statsmodels_pooled_with_missing_values_and_a_filter() -> None:
    rng = np.random.default_rng(11)
    n = 160
    age = rng.integers(20, 80, n)
    bmi = np.round(rng.normal(27, 4, n), 1)
    smoker = rng.random(n) < 0.3
    sbp = np.round(100 + 0.5 * age + 1.2 * bmi + 8 * smoker + rng.normal(0, 10, n), 1)
    site = rng.choice(["a", "b", "c"], n)
    bmi_values: list[int | None] = [round(float(v) * 10) for v in bmi]
    sbp_values: list[int | None] = [round(float(v) * 10) for v in sbp]
    for i in rng.choice(n, 12, replace=False):
        bmi_values[i] = None
    for i in rng.choice(n, 14, replace=False):
        sbp_values[i] = None
    table = (Table().numeric("age", [int(a) for a in age])
             .numeric("bmi", bmi_values, scale=1)
             .boolean("smoker", [bool(v) for v in smoker])
             .numeric("sbp", sbp_values, scale=1)
             .categorical("site", ["a", "b", "c"], [str(v) for v in site]))
    got = run(REGRESSION, table,
              {"y": "sbp", "x": ["age", "bmi", "smoker"],
               "filter": {"op": "!=", "column": "site", "value": "c"}},
              Rules(5, 5), (("tm", 70), ("tr", n - 70)))
    keep = [i for i in range(n) if bmi_values[i] is not None and sbp_values[i] is not None
            and site[i] != "c"]
    x = np.column_stack([age, bmi, smoker.astype(float)])[keep]
    check(got, sbp[keep], x, ["age", "bmi", "smoker"])
    assert got["y"] == "sbp" and got["x"] == ["age", "bmi", "smoker"]


def test_matches_statsmodels_with_one_date_covariate_and_declared_ranges() -> None:
    """Declared ranges rule every range bit out; a date counts days."""
    rng = np.random.default_rng(5)
    n = 48
    days = rng.integers(18_000, 20_000, n)
    y = np.round(3.5 - 0.002 * (days - 19_000) + rng.normal(0, 0.8, n), 2)
    table = (Table().numeric("visit", [int(d) for d in days], kind="date",
                             minimum=17_000, maximum=21_000)
             .numeric("crp", [round(float(v) * 100) for v in y], scale=2,
                      minimum=-50, maximum=50))
    got, _ = observed(REGRESSION, table, {"y": "crp", "x": ["visit"]}, Rules(5, 5),
                         (("a", 20), ("b", 28)))
    check(got.aggregates, y, days.astype(float).reshape(-1, 1), ["visit"])
    # no range bit and no mean bit: the declared ranges imply both; one covariate: no
    # convergence bit either (R_xx = 1); the refinement's bit
    assert [o.name for o in got.transcript if o.kind == "bits"] == [
        "every slope residual r - R b (2^-50 units) in [-1099511627776, 1099511627776]"]
    assert got.aggregates["max_parameter_ratio"] == "0.33"


def test_matches_statsmodels_with_four_correlated_covariates() -> None:
    rng = np.random.default_rng(23)
    n = 200
    a = rng.normal(0, 10, n)
    b = 0.8 * a + rng.normal(0, 4, n)  # correlated with a (kappa about 10)
    c = rng.integers(-5, 6, n).astype(float)
    d = rng.random(n) < 0.5
    y = 2.0 - 0.7 * a + 1.1 * b + 0.3 * c - 4.0 * d + rng.normal(0, 3, n)
    table = (Table().numeric("a", [round(float(v) * 10) for v in a], scale=1)
             .numeric("b", [round(float(v) * 10) for v in b], scale=1)
             .numeric("c", [int(v) for v in c])
             .boolean("d", [bool(v) for v in d])
             .numeric("y", [round(float(v) * 100) for v in y], scale=2))
    got, _ = observed(REGRESSION, table, {"y": "y", "x": ["a", "b", "c", "d"]},
                      Rules(5, 5), (("s1", 90), ("s2", 110)))
    x = np.column_stack([np.round(a, 1), np.round(b, 1), c, d.astype(float)])
    check(got.aggregates, np.round(y, 2), x, ["a", "b", "c", "d"])
    assert [(o.name, o.elements) for o in got.transcript if o.kind == "bits"] == [
        ("every 'a', 'b', 'c', 'y' value in "
         f"[-{spread_bound(n) // 2}, {spread_bound(n) // 2}]", 1),
        ("each contributor's query set >= 5; n >= 5; rows of the query set where 'd' is "
         "false 0 or >= 5", 4),
        ("every entry of I - R X (Newton-Schulz, 2^-20 units) in [-256, 256]", 1),
        ("every covariate's sum over its spread (2^-16 units) in [-4194304, 4194304]", 1),
        ("every slope residual r - R b (2^-50 units) in [-1099511627776, 1099511627776]",
         1)]
    assert len(got.transcript) == 4 + 1 + 5 + 4 + 1 + 4 + 4 + 1 + 1 + 1


def test_a_mean_far_from_zero_leaves_only_the_intercept_se_unknown() -> None:
    """A covariate whose mean is more than 64 sd from 0 (a year, say): the coefficients
    and the slopes' SEs are as statsmodels', the intercept's SE is null with the reason."""
    rng = np.random.default_rng(9)
    n = 60
    year = rng.integers(1990, 2000, n)
    y = 0.4 * (year - 1995) + rng.normal(0, 1, n)
    table = (Table().numeric("year", [int(v) for v in year])
             .numeric("y", [round(float(v) * 100) for v in y], scale=2))
    got = run(REGRESSION, table, {"y": "y", "x": ["year"]}, Rules(5, 5))
    reference = sm.OLS(np.round(y, 2), sm.add_constant(year.astype(float))).fit()
    intercept, slope = got["coefficients"]
    assert intercept["estimate"] == pytest.approx(float(reference.params[0]), rel=1e-4)
    assert intercept["se"] is None and intercept["p"] is None
    assert intercept["reason"].startswith("a covariate's mean lies more than 64 standard")
    assert slope["estimate"] == pytest.approx(float(reference.params[1]), rel=1e-4)
    assert slope["se"] == pytest.approx(float(reference.bse[1]), rel=1e-4)
    assert slope["p"] == pytest.approx(float(reference.pvalues[1]), rel=1e-3, abs=1e-9)


def test_a_categorical_covariate_enters_by_its_levels_but_the_first() -> None:
    """Treatment coding against the first declared level, as statsmodels' dummies; every
    level's rows are gated, the reference level's too."""
    rng = np.random.default_rng(31)
    n = 90
    levels = ["I", "II", "III"]
    stage = rng.choice(levels, n, p=[0.4, 0.35, 0.25])
    age = rng.integers(30, 80, n)
    effect = {"I": 0.0, "II": 3.0, "III": 7.5}
    y = 20 + 0.1 * age + np.array([effect[v] for v in stage]) + rng.normal(0, 2, n)
    table = (Table().numeric("age", [int(v) for v in age])
             .categorical("stage", levels, [str(v) for v in stage])
             .numeric("y", [round(float(v) * 10) for v in y], scale=1))
    parameters = {"y": "y", "x": ["age", "stage"]}
    got, _ = observed(REGRESSION, table, parameters, Rules(5, 5))
    dummies = np.column_stack([age, stage == "II", stage == "III"]).astype(float)
    check(got.aggregates, np.round(y, 1), dummies, ["age", "stage=II", "stage=III"])
    gated = [o.name for o in got.transcript if "is false" in o.name]
    assert [g.split("where ")[-1] for g in gated] == [
        "'stage=I' is false 0 or >= 5", "'stage=II' is false 0 or >= 5",
        "'stage=III' is false 0 or >= 5"]
    assert REGRESSION.columns(parameters, Table().numeric("age", [1]).categorical(
        "stage", levels, ["I"]).numeric("y", [1]).inputs()[0].manifest) == [
        "age", "stage=II", "stage=III", "y", "stage=I"]
    rare = ["I" if i < 2 else str(v) if v != "I" else "II" for i, v in enumerate(stage)]
    table = (Table().numeric("age", [int(v) for v in age])
             .categorical("stage", levels, rare)
             .numeric("y", [round(float(v) * 10) for v in y], scale=1))
    refused = run(REGRESSION, table, parameters, Rules(5, 5))
    assert refused["suppressed"] and refused["reason"].endswith(
        "counting the rows where 'stage=I' is true")


@settings(max_examples=4, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(48, 120), st.integers(1, 3),
       st.lists(st.integers(0, 2), min_size=4, max_size=4))
def test_random_data_sets_match_statsmodels(seed: int, n: int, k: int,
                                            scales: list[int]) -> None:
    """Random covariates (shifted, scaled, correlated), scales, two sites and missing
    values; statsmodels on the rows where all are present."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, (n, k)) * rng.uniform(0.5, 30, k) + rng.uniform(-50, 50, k)
    if k > 1:
        x[:, 1] += rng.uniform(-0.8, 0.8) * x[:, 0]
    x = np.column_stack([np.round(x[:, j], scales[j]) for j in range(k)])
    y = x @ rng.normal(0, 2, k) + rng.normal(0, rng.uniform(0.5, 20), n)
    y = np.round(y, scales[3])
    table = Table()
    names = [f"x{j}" for j in range(k)]
    missing = rng.choice(n, 6, replace=False)
    for j, name in enumerate(names):
        scale = scales[j]
        values: list[int | None] = [round(float(v) * 10**scale) for v in x[:, j]]
        if j == 0:
            for i in missing:
                values[i] = None
        table.numeric(name, values, scale=scale)
    table.numeric("y", [round(float(v) * 10 ** scales[3]) for v in y], scale=scales[3])
    got = run(REGRESSION, table, {"y": "y", "x": names}, Rules(5, 5),
              (("a", n // 2), ("b", n - n // 2)))
    keep = np.setdiff1d(np.arange(n), missing)
    check(got, y[keep], x[keep], names)


def regression_table(n: int = 30, seed: int = 2) -> tuple[Table, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 100, n)
    y = 3 * x + rng.integers(-20, 20, n)
    return Table().numeric("x", [int(v) for v in x]).numeric("y", [int(v) for v in y]), x, y


def test_the_transcript_names_every_opening_and_no_sum() -> None:
    table, x, y = regression_table()
    got, seen = observed(REGRESSION, table, {"y": "y", "x": ["x"]}, Rules(5, 5))
    check(got.aggregates, y.astype(float), x.astype(float).reshape(-1, 1), ["x"])
    half = spread_bound(len(x)) // 2
    assert [(o.name, o.kind, o.elements) for o in got.transcript] == [
        (f"every 'x', 'y' value in [-{half}, {half}]", "bits", 1),
        ("n", "values", 1),
        ("A = n Sxx - Sx^2 of 'x'", "values", 1),
        ("A = n Sxx - Sx^2 of 'y'", "values", 1),
        ("every covariate's sum over its spread (2^-16 units) in [-4194304, 4194304]",
         "bits", 1),
        ("standardised slope of 'x' (2^-20 units)", "values", 1),
        ("every slope residual r - R b (2^-50 units) in [-1099511627776, 1099511627776]",
         "bits", 1),
        ("correction of the slope of 'x' (2^-34 units)", "values", 1),
        ("[R^-1]_jj of 'x' (2^-20 units)", "values", 1),
        ("RSS / TSS at the opened slopes (2^-(2 g + 30) units)", "values", 1),
        ("m' R^-1 m (2^-32 units)", "values", 1),
        (got.transcript[-1].name, "values", 1),
    ]
    assert got.transcript[-1].name.startswith("intercept numerator 2^")
    n = len(x)
    opened = seen.arith_values
    assert opened[:3] == [n, n * int(np.sum(x * x)) - int(x.sum()) ** 2,
                          n * int(np.sum(y * y)) - int(y.sum()) ** 2]
    # neither a sum nor a cross product nor the co-moment C is among the opened values
    hidden = {int(x.sum()), int(y.sum()), int(np.sum(x * y)),
              n * int(np.sum(x * y)) - int(x.sum()) * int(y.sum())}
    assert hidden.isdisjoint(opened)


def test_more_coefficients_than_the_parameter_limit_are_refused() -> None:
    rng = np.random.default_rng(4)
    n = 8  # floor(0.33 * 8) = 2 coefficients: one covariate, not two
    table = (Table().numeric("x1", [int(v) for v in rng.integers(0, 50, n)])
             .numeric("x2", [int(v) for v in rng.integers(0, 50, n)])
             .numeric("y", [int(v) for v in rng.integers(0, 50, n)]))
    got, seen = observed(REGRESSION, table, {"y": "y", "x": ["x1", "x2"]}, Rules(1, 1))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "linear_regression: 3 coefficients (the intercept and 2 covariate(s)) exceed "
                  "floor(0.33 n) = 2 for the n = 8 rows of the query set (parameter limit)"}
    assert seen.arith_values == [8]  # n only
    assert "suppressed" not in run(REGRESSION, table, {"y": "y", "x": ["x1"]}, Rules(1, 1))
    lower = run(REGRESSION, table, {"y": "y", "x": ["x1"], "max_parameter_ratio": "0.2"},
                Rules(1, 1))
    assert lower["reason"].startswith("linear_regression: 2 coefficients (the intercept and "
                                      "1 covariate(s)) exceed floor(0.2 n) = 1")


def test_a_contributor_below_k_and_an_empty_subset_are_refused() -> None:
    table, _, _ = regression_table(n=30)
    small = run(REGRESSION, table, {"y": "y", "x": ["x"]}, Rules(5, 5),
                (("big", 27), ("tiny", 3)))
    assert small == {"suppressed": True, "reason": "site(s) 'tiny' contribute fewer than 5 "
                                                   "rows (min_subset_size) to the query set"}
    empty, seen = observed(REGRESSION, table, {"y": "y", "x": ["x"], "filter": {
        "op": ">", "column": "x", "value": 1000}}, Rules(5, 5))
    assert empty.aggregates == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the "
                  "query set"}
    assert seen.arith == []  # only gate bits


def test_a_boolean_covariate_true_in_fewer_than_k_rows_is_refused() -> None:
    """Its variance c (n - c) would tell the count c of true rows: they are gated as
    ``count`` v2 gates them, before n or anything else is opened."""
    table, _, _ = regression_table(n=30)
    table.boolean("rare", [i in (3, 17) for i in range(30)])
    table.boolean("common", [i % 2 == 0 for i in range(30)])
    got, seen = observed(REGRESSION, table, {"y": "y", "x": ["x", "rare"]}, Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the "
                  "query set, counting the rows where 'rare' is true"}
    assert seen.arith == []
    assert "suppressed" not in run(REGRESSION, table, {"y": "y", "x": ["x", "common"]},
                                   Rules(5, 5))


def test_collinear_and_constant_covariates_are_refused() -> None:
    rng = np.random.default_rng(8)
    n = 40
    x1 = rng.integers(0, 100, n)
    x3 = x1 + rng.integers(-1, 2, n) * (np.arange(n) == 0)  # all but one row equal to x1
    y = x1 + rng.integers(-10, 10, n)
    table = (Table().numeric("x1", [int(v) for v in x1])
             .numeric("x2", [int(2 * v + 7) for v in x1])
             .numeric("x3", [int(v) for v in x3])
             .numeric("c", [4] * n)
             .numeric("y", [int(v) for v in y]))
    reason = ("linear_regression: the covariates are (near-)collinear: the inverse of their "
              "correlation matrix did not converge in 16 Newton-Schulz iterations (drop or "
              "combine covariates)")
    for x in (["x1", "x2"], ["x1", "x3"]):
        got, seen = observed(REGRESSION, table, {"y": "y", "x": x}, Rules(5, 5))
        assert got.aggregates == {"suppressed": True, "reason": reason}, x
        assert len(seen.arith_values) == 4  # n and the three variances; no coefficient
    constant = run(REGRESSION, table, {"y": "y", "x": ["x1", "c"]}, Rules(5, 5))
    assert constant == {"suppressed": True, "reason": "linear_regression: 'c' constant over "
                                                      "the query set: the model is not "
                                                      "identified"}


def test_parameters_are_checked() -> None:
    table, _, _ = regression_table()
    table.categorical("stage", ["I", "II"], ["I", "II"] * 15)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"y": "y", "x": ["y"]}, "cannot be a covariate too"),
        ({"y": "y", "x": ["stage", "y"]}, "cannot be a covariate too"),
        ({"y": "stage", "x": ["x"]}, "parameter 'y': 'stage' is categorical"),
        ({"y": "y", "x": []}, "parameter 'x'"),
        ({"y": "y", "x": ["x"], "max_parameter_ratio": 0.2}, "max_parameter_ratio"),
        ({"y": "y", "x": ["x"], "max_parameter_ratio": "0.34"}, "only lower the limit"),
        ({"y": "y", "x": ["x"], "max_parameter_ratio": "0"}, "only lower the limit"),
        ({"y": "y", "x": ["x"], "max_parameter_ratio": "1/3"}, "max_parameter_ratio"),
        ({"y": "y", "x": ["x"], "max_parameter_ratio": True}, "max_parameter_ratio"),
        ({"y": "y", "x": ["x", "x"]}, "parameter 'x'"),
        ({"y": "y"}, "'x' is a required property"),
    ]
    for parameters, message in cases:
        with pytest.raises(AnalysisError, match=message):
            run(REGRESSION, table, parameters, Rules(5, 5))


def test_only_the_declared_columns_are_needed() -> None:
    """A node loads exactly ``columns()``: the outcome, the covariates, their flags and the
    filter's columns."""
    table, x, y = regression_table()
    table.numeric("w", [int(v) for v in x + 1], present=True)
    parameters = {"y": "y", "x": ["w"], "filter": {"op": "<", "column": "x", "value": 60}}
    manifest = parse_manifest(table.entries)
    wanted = REGRESSION.columns(parameters, manifest)
    assert wanted == ["w", "w__present", "y", "x"]
    assert REGRESSION.typed_columns(parameters, manifest) == ["w", "x", "y"]
    narrow = Table(entries=table.entries,
                   values={c: v for c, v in table.values.items() if c in wanted})
    got = run(REGRESSION, narrow, parameters, Rules(5, 5))
    keep = x < 60
    check(got, y[keep].astype(float), (x[keep] + 1).astype(float).reshape(-1, 1), ["w"])
