"""``logistic_regression`` v1 against ``statsmodels`` Logit on three loopback parties:
pooled over two sites with a boolean and a scaled covariate and a filter; the refusals
(events below k, separation, the parameter limit); the opening transcript."""

from __future__ import annotations

import numpy as np
import pytest
import statsmodels.api as sm

from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.logistic import LogisticRegression, hinge_sigmoid
from dic_connector.node.analyses.regression import INTERCEPT
from tests.dic_connector.node.analyses.support import Table, observed, run

LOGISTIC = LogisticRegression()


def test_the_sigmoid_interpolant_is_within_its_documented_error() -> None:
    c0, knots, d = hinge_sigmoid()
    x = np.linspace(-20, 20, 20_001)
    hinge = np.maximum(x[:, None] - knots[None, :] / 2.0**20, 0.0)
    approx = c0 / 2.0**60 + hinge @ (d / 2.0**40)
    assert int(d.sum()) == 0
    assert np.abs(approx - 1 / (1 + np.exp(-x))).max() < 5e-5


def test_matches_statsmodels_logit_pooled_with_a_filter() -> None:
    rng = np.random.default_rng(3)
    n = 220
    age = rng.integers(20, 80, n)
    bmi = np.round(rng.normal(27, 4, n), 1)
    smoker = rng.random(n) < 0.3
    site = rng.choice(["a", "b"], n, p=[0.9, 0.1])
    event = rng.random(n) < 1 / (1 + np.exp(-(-6 + 0.06 * age + 0.08 * bmi + 0.9 * smoker)))
    table = (Table().numeric("age", [int(v) for v in age])
             .numeric("bmi", [round(float(v) * 10) for v in bmi], scale=1)
             .boolean("smoker", [bool(v) for v in smoker])
             .boolean("event", [bool(v) for v in event])
             .categorical("site", ["a", "b"], [str(v) for v in site]))
    got, _ = observed(LOGISTIC, table,
                      {"y": "event", "x": ["age", "bmi", "smoker"],
                       "filter": {"op": "==", "column": "site", "value": "a"}},
                      Rules(5, 5), (("tm", 110), ("tr", 110)))
    keep = site == "a"
    x = np.column_stack([age, bmi, smoker.astype(float)])[keep]
    reference = sm.Logit(event[keep].astype(float), sm.add_constant(x)).fit(disp=0)
    aggregates = got.aggregates
    assert aggregates["n"] == int(keep.sum())
    assert [c["term"] for c in aggregates["coefficients"]] == [INTERCEPT, "age", "bmi",
                                                                 "smoker"]
    for c, estimate, se, p in zip(aggregates["coefficients"], reference.params,
                                  reference.bse, reference.pvalues, strict=True):
        # the sigmoid interpolant (5e-5) moves the estimates by ~1e-3 of an SE
        assert c["estimate"] == pytest.approx(float(estimate), abs=3e-3 * float(se)), c
        assert c["se"] == pytest.approx(float(se), rel=1e-4), c
        assert c["z"] == pytest.approx(float(estimate) / float(se), abs=3e-3), c
        assert c["p"] == pytest.approx(float(p), rel=2e-2, abs=1e-6), c
    names = [o.name for o in got.transcript]
    assert "n" in names and "every entry of I - G X (last Newton-Schulz, 2^-20 units) in " \
        "[-256, 256]" in names
    assert [n for n in names if "is false" in n] == [
        "each contributor's query set >= 5; n >= 5; rows of the query set where 'smoker' is "
        "false 0 or >= 5",
        "each contributor's query set >= 5; n >= 5; rows of the query set where 'event' is "
        "false 0 or >= 5"]


def test_matches_statsmodels_logit_with_a_categorical_and_a_date() -> None:
    rng = np.random.default_rng(12)
    n = 150
    levels = ["low", "mid", "high"]
    grade = rng.choice(levels, n)
    days = rng.integers(18_000, 20_000, n)
    effect = {"low": -0.5, "mid": 0.0, "high": 1.0}
    eta = np.array([effect[v] for v in grade]) + 0.001 * (days - 19_000)
    event = rng.random(n) < 1 / (1 + np.exp(-eta))
    table = (Table().categorical("grade", levels, [str(v) for v in grade])
             .numeric("visit", [int(v) for v in days], kind="date", minimum=17_000,
                      maximum=21_000)
             .boolean("event", [bool(v) for v in event]))
    got = run(LOGISTIC, table, {"y": "event", "x": ["grade", "visit"]}, Rules(5, 5))
    x = np.column_stack([grade == "mid", grade == "high", days]).astype(float)
    reference = sm.Logit(event.astype(float), sm.add_constant(x)).fit(disp=0)
    assert [c["term"] for c in got["coefficients"]] == [INTERCEPT, "grade=mid",
                                                        "grade=high", "visit"]
    for c, estimate, se in zip(got["coefficients"], reference.params, reference.bse,
                               strict=True):
        assert c["estimate"] == pytest.approx(float(estimate), abs=3e-3 * float(se)), c
        assert c["se"] == pytest.approx(float(se), rel=1e-4), c


def test_a_mean_far_from_zero_leaves_only_the_intercept_se_unknown() -> None:
    rng = np.random.default_rng(4)
    n = 80
    year = rng.integers(1990, 2000, n)
    event = rng.random(n) < 1 / (1 + np.exp(-0.3 * (year - 1995)))
    table = Table().numeric("year", [int(v) for v in year]).boolean(
        "event", [bool(v) for v in event])
    got = run(LOGISTIC, table, {"y": "event", "x": ["year"]}, Rules(5, 5))
    reference = sm.Logit(event.astype(float), sm.add_constant(year.astype(float))).fit(disp=0)
    intercept, slope = got["coefficients"]
    assert intercept["se"] is None and intercept["reason"].startswith("a covariate's mean")
    assert intercept["estimate"] == pytest.approx(float(reference.params[0]),
                                                  abs=3e-3 * float(reference.bse[0]))
    assert slope["estimate"] == pytest.approx(float(reference.params[1]),
                                              abs=3e-3 * float(reference.bse[1]))
    assert slope["se"] == pytest.approx(float(reference.bse[1]), rel=1e-4)


def outcome_table(n: int, events: list[bool]) -> Table:
    rng = np.random.default_rng(1)
    return (Table().numeric("x", [int(v) for v in rng.integers(0, 100, n)])
            .boolean("event", events))


def test_fewer_than_k_events_are_refused_before_anything_opens() -> None:
    got, seen = observed(LOGISTIC, outcome_table(40, [i < 3 for i in range(40)]),
                         {"y": "event", "x": ["x"]}, Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the "
                  "query set, counting the rows where 'event' is true"}
    assert seen.arith == []


def test_a_separated_outcome_is_refused() -> None:
    x = list(range(40))
    table = Table().numeric("x", x).boolean("event", [v >= 20 for v in x])
    got, seen = observed(LOGISTIC, table, {"y": "event", "x": ["x"]}, Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "logistic_regression: IRLS did not converge in 6 iterations (is the "
                  "outcome (quasi-)separated by the covariates?)"}
    assert len(seen.arith_values) == 3  # n and the two variances; no coefficient


def test_the_parameter_limit_and_a_numeric_outcome() -> None:
    table = outcome_table(8, [i % 2 == 0 for i in range(8)])
    table.numeric("w", list(range(8)))
    got = run(LOGISTIC, table, {"y": "event", "x": ["x", "w"]}, Rules(1, 1))
    assert got["reason"].endswith("(parameter limit)")
    with pytest.raises(Exception, match="parameter 'y': 'w' is numeric"):
        run(LOGISTIC, table, {"y": "w", "x": ["x"]}, Rules(1, 1))
