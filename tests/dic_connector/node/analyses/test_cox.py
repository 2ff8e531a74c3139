"""``cox_regression`` v1 against ``statsmodels`` PHReg (Breslow ties, the same bins) on three
loopback parties: pooled over two sites with a filter, numeric (scaled), boolean and
categorical covariates, hazard ratios and intervals; lifelines' CoxPHFitter where the grid
separates every time (no ties: Breslow = Efron = the exact partial likelihood); the default
grid; rows missing the time or a covariate; refusals (a too small subset, too few events, a
diverging coefficient, an unidentified one, collinear ones, a time beyond the exact
comparisons, the parameter limit, bad parameters); the opening transcript."""

from __future__ import annotations

import math

import numpy as np
import pytest
from lifelines import CoxPHFitter
from statsmodels.duration.hazard_regression import PHReg

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.cox import DEFAULT_BINS, CoxRegression
from dic_connector.node.analyses.disclosure import Rules
from tests.dic_connector.node.analyses.support import Table, observed, run

COX = CoxRegression()
#: Documented error (module doc): estimates within 1e-3 of an SE, SEs within 1e-3 relative.
SE_FRACTION = 1e-3


def binned(times: np.ndarray, breaks: list[float]) -> np.ndarray:
    """Row i's bin: the number of breaks below its time (the module doc's grid)."""
    return np.array([sum(t > b for b in breaks) for t in times], dtype=np.float64)


def reference(times: np.ndarray, events: np.ndarray, x: np.ndarray, breaks: list[float]
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fit = PHReg(binned(times, breaks), x.astype(np.float64), status=events.astype(np.float64),
                ties="breslow").fit()
    return np.asarray(fit.params), np.asarray(fit.bse), np.asarray(fit.pvalues)


def assert_matches(got: dict[str, object], params: np.ndarray, bse: np.ndarray,
                   pvalues: np.ndarray) -> None:
    rows = got["coefficients"]
    assert isinstance(rows, list)
    for c, estimate, se, p in zip(rows, params, bse, pvalues, strict=True):
        assert c["estimate"] == pytest.approx(float(estimate), abs=SE_FRACTION * float(se)), c
        assert c["se"] == pytest.approx(float(se), rel=SE_FRACTION), c
        assert c["z"] == pytest.approx(float(estimate / se), abs=2 * SE_FRACTION), c
        assert c["p"] == pytest.approx(float(p), rel=1e-2, abs=1e-9), c
        assert c["hazard_ratio"] == pytest.approx(math.exp(float(estimate)),
                                                  rel=SE_FRACTION * float(se))
        assert c["ci_lower"] == pytest.approx(math.exp(float(estimate - 1.959964 * se)),
                                              rel=1e-3)
        assert c["ci_upper"] == pytest.approx(math.exp(float(estimate + 1.959964 * se)),
                                              rel=1e-3)


def trial(n: int, seed: int) -> tuple[Table, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    age = rng.integers(30, 85, n)
    bmi = np.round(rng.normal(27, 4, n), 1)
    treat = rng.random(n) < 0.5
    stage = rng.choice(["I", "II", "III"], n, p=[0.4, 0.35, 0.25])
    site = rng.choice(["a", "b"], n, p=[0.85, 0.15])
    effect = {"I": 0.0, "II": 0.4, "III": 0.9}
    hazard = np.exp(0.03 * (age - 60) + 0.05 * (bmi - 27) - 0.6 * treat
                    + np.array([effect[v] for v in stage]))
    follow = np.minimum(rng.exponential(14 / hazard), 36.0)
    event = (follow < 36.0) & (rng.random(n) < 0.9)
    months = np.ceil(follow).astype(int)
    table = (Table().numeric("months", [int(v) for v in months], minimum=0, maximum=36)
             .boolean("death", [bool(v) for v in event])
             .numeric("age", [int(v) for v in age])
             .numeric("bmi", [round(float(v) * 10) for v in bmi], scale=1)
             .boolean("treat", [bool(v) for v in treat])
             .categorical("stage", ["I", "II", "III"], [str(v) for v in stage])
             .categorical("site", ["a", "b"], [str(v) for v in site]))
    return table, {"months": months, "death": event, "age": age, "bmi": bmi,
                   "treat": treat, "stage": stage, "site": site}


def test_matches_statsmodels_breslow_pooled_with_a_filter_and_the_transcript() -> None:
    table, v = trial(220, 7)
    breaks = [3, 6, 9, 12, 18, 24, 30]
    got, _ = observed(COX, table,
                      {"time": "months", "event": "death", "x": ["age", "bmi", "treat"],
                       "breaks": breaks, "filter": {"op": "==", "column": "site",
                                                    "value": "a"}},
                      Rules(5, 5), (("tm", 110), ("tr", 110)))
    keep = v["site"] == "a"
    x = np.column_stack([v["age"], v["bmi"], v["treat"]])[keep]
    params, bse, pvalues = reference(v["months"][keep], v["death"][keep], x, breaks)
    out = got.aggregates
    assert out["n"] == int(keep.sum()) and out["ties"] == "breslow"
    assert [c["term"] for c in out["coefficients"]] == ["age", "bmi", "treat"]
    assert_matches(out, params, bse, pvalues)
    names = [o.name for o in got.transcript]
    # exactly what opens: gates, n, the variances, four check bits, the estimates and the
    # diagonal of I^-1; no risk set, event count per bin or weighted sum
    tail = names[names.index("n"):]
    assert tail == [
        "n", "A = n Sxx - Sx^2 of 'age'", "A = n Sxx - Sx^2 of 'bmi'",
        "A = n Sxx - Sx^2 of 'treat'", "A = n Sxx - Sx^2 of 'death'",
        "every entry of I - G X (last Newton-Schulz, 2^-20 units) in [-256, 256]",
        "every standardised coefficient (2^-20 units) in [-8388608, 8388608]",
        "every linear predictor (2^-20 units) in [-6291456, 6291456]",
        "every last Newton step (2^-20 units) in [-4096, 4096]",
        "standardised coefficient of 'age' (2^-20 units)",
        "standardised coefficient of 'bmi' (2^-20 units)",
        "standardised coefficient of 'treat' (2^-20 units)",
        "[I^-1]_jj of 'age' (2^-36 units)", "[I^-1]_jj of 'bmi' (2^-36 units)",
        "[I^-1]_jj of 'treat' (2^-36 units)"]
    before = names[:names.index("n")]
    assert any("'death' is false" in name for name in before)
    assert any("'treat' is false" in name for name in before)
    assert all(o.elements == 1 for o in got.transcript if o.name in tail)


def test_a_categorical_covariate_and_the_default_grid() -> None:
    table, v = trial(160, 11)
    got = run(COX, table, {"time": "months", "event": "death", "x": ["stage", "age"]},
              Rules(5, 5))
    breaks = [36 * b // DEFAULT_BINS for b in range(1, DEFAULT_BINS)]  # the declared 0..36
    x = np.column_stack([v["stage"] == "II", v["stage"] == "III", v["age"]]).astype(float)
    params, bse, pvalues = reference(v["months"], v["death"], x, breaks)
    assert [c["term"] for c in got["coefficients"]] == ["stage=II", "stage=III", "age"]
    assert_matches(got, params, bse, pvalues)


def test_a_grid_between_every_time_agrees_with_lifelines() -> None:
    rng = np.random.default_rng(2)
    n = 40
    marker = np.round(rng.normal(0, 1, n), 2)
    order = np.argsort(-marker + rng.normal(0, 1.2, n))
    times = np.empty(n, dtype=int)
    times[order] = np.arange(1, n + 1)  # distinct: no ties in any bin
    event = rng.random(n) < 0.8
    table = (Table().numeric("t", [int(v) for v in times])
             .boolean("e", [bool(v) for v in event])
             .numeric("marker", [round(float(v) * 100) for v in marker], scale=2))
    breaks = [float(b) for b in range(1, n)]
    got = run(COX, table, {"time": "t", "event": "e", "x": ["marker"], "breaks": breaks},
              Rules(5, 5))
    frame = {"t": times.astype(float), "e": event.astype(float), "marker": marker}
    import pandas as pd

    fit = CoxPHFitter().fit(pd.DataFrame(frame), duration_col="t", event_col="e")
    (c,) = got["coefficients"]
    assert c["estimate"] == pytest.approx(float(fit.params_["marker"]),
                                          abs=SE_FRACTION * float(fit.standard_errors_["marker"]))
    assert c["se"] == pytest.approx(float(fit.standard_errors_["marker"]), rel=SE_FRACTION)


def test_a_too_small_subset_is_refused_before_anything_opens() -> None:
    table, _ = trial(60, 3)
    got, seen = observed(COX, table,
                         {"time": "months", "event": "death", "x": ["age"], "breaks": [12],
                          "filter": {"op": ">", "column": "age", "value": 83}},
                         Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the "
                  "query set"}
    assert seen.arith == []


def test_fewer_than_k_events_are_refused() -> None:
    times = list(range(1, 41))
    table = (Table().numeric("t", times).boolean("e", [i < 3 for i in range(40)])
             .numeric("x", [i % 7 for i in range(40)]))
    got, seen = observed(COX, table, {"time": "t", "event": "e", "x": ["x"], "breaks": [10]},
                         Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "site(s) 'site' contribute fewer than 5 rows (min_subset_size) to the "
                  "query set, counting the rows where 'e' is true"}
    assert seen.arith == []


def test_a_covariate_that_orders_the_deaths_is_refused() -> None:
    """The highest marker always dies first: the partial likelihood grows without bound
    in its coefficient, which the checks catch before any estimate opens."""
    n = 40
    table = (Table().numeric("t", list(range(1, n + 1))).boolean("e", [True] * 30 + [False] * 10)
             .numeric("marker", list(range(n, 0, -1))))
    got, seen = observed(COX, table, {"time": "t", "event": "e", "x": ["marker"],
                                      "breaks": list(range(1, n))}, Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "cox_regression: a coefficient diverges: the partial likelihood is "
                  "monotone (do the covariates separate the events?)"}
    assert not any("coefficient of" in o.name for o in got.transcript)
    assert len(seen.arith_values) == 3  # n and the two variances


def test_the_parameter_limit_and_bad_parameters() -> None:
    table, _ = trial(8, 1)
    got = run(COX, table, {"time": "months", "event": "death", "x": ["age", "bmi"]},
              Rules(1, 1))
    assert got["reason"].startswith("cox_regression: 3 coefficients (the baseline hazard "
                                    "and 2 covariate(s)) exceed floor(0.33 n)")
    assert got["reason"].endswith("(parameter limit)")
    with pytest.raises(AnalysisError, match=r"^cox_regression: parameter 'max_parameter_ra"):
        run(COX, table, {"time": "months", "event": "death", "x": ["age"],
                         "max_parameter_ratio": "0.5"}, Rules(1, 1))
    with pytest.raises(AnalysisError, match="the time \\('months'\\) cannot be a covariate"):
        run(COX, table, {"time": "months", "event": "death", "x": ["months"]}, Rules(1, 1))
    with pytest.raises(AnalysisError, match="expected ascending times"):
        run(COX, table, {"time": "months", "event": "death", "x": ["age"],
                         "breaks": [6, 3]}, Rules(1, 1))
    with pytest.raises(AnalysisError, match="parameter 'event': 'age' is numeric"):
        run(COX, table, {"time": "months", "event": "age", "x": ["bmi"]}, Rules(1, 1))
    with pytest.raises(AnalysisError, match="declares no minimum and maximum"):
        run(COX, table, {"time": "age", "event": "death", "x": ["bmi"]}, Rules(1, 1))
    with pytest.raises(AnalysisError, match="a break lies outside \\+-2\\^61"):
        run(COX, table, {"time": "months", "event": "death", "x": ["age"],
                         "breaks": [1e19]}, Rules(1, 1))


def test_a_time_beyond_the_exact_comparisons_is_refused() -> None:
    n = 20
    times = [i + 1 for i in range(n)]
    times[3] = (1 << 61) + 1  # no declared range: one bit checks every time
    table = (Table().numeric("t", times).boolean("e", [i % 2 == 0 for i in range(n)])
             .numeric("x", [i % 5 for i in range(n)]))
    got, _ = observed(COX, table, {"time": "t", "event": "e", "x": ["x"], "breaks": [5, 10]},
                      Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "cox_regression: a value of 't' lies outside +-2^61 (encoded), where the "
                  "grid's comparisons are not exact"}
    assert "every 't' time in [-2305843009213693952, 2305843009213693952]" in [
        o.name for o in got.transcript]


def test_a_covariate_constant_over_every_risk_set_with_an_event_is_refused() -> None:
    """x varies only among rows censored before the first death: every event's risk set
    has one x, so I = 0 (statsmodels returns nan); the information bit refuses it."""
    n = 40
    early = [i < 10 for i in range(n)]
    table = (Table().numeric("t", [1 if e else 5 + i for i, e in enumerate(early)])
             .boolean("e", [not e and i % 3 != 0 for i, e in enumerate(early)])
             .boolean("x", early))
    got, _ = observed(COX, table, {"time": "t", "event": "e", "x": ["x"], "breaks": [2, 10]},
                      Rules(5, 5))
    assert got.aggregates == {
        "suppressed": True,
        "reason": "cox_regression: the information is below 2^-4: the coefficient is not "
                  "identified"}
    assert "every information I (2^-20 units) in [65536, 4611686018427387903]" in [
        o.name for o in got.transcript]
    assert not any("coefficient of" in o.name for o in got.transcript)


def test_rows_missing_the_time_or_a_covariate_are_left_out() -> None:
    _, v = trial(150, 5)
    rng = np.random.default_rng(9)
    lost_time = rng.random(150) < 0.1
    lost_bmi = rng.random(150) < 0.1
    months = [None if lost else int(m) for m, lost in zip(v["months"], lost_time, strict=True)]
    bmi = [None if lost else round(float(b) * 10) for b, lost in zip(v["bmi"], lost_bmi,
                                                                       strict=True)]
    missing = (Table().numeric("months", months, minimum=0, maximum=36)
               .boolean("death", [bool(e) for e in v["death"]])
               .numeric("bmi", bmi, scale=1).boolean("treat", [bool(t) for t in v["treat"]]))
    got = run(COX, missing, {"time": "months", "event": "death", "x": ["bmi", "treat"],
                             "breaks": [6, 12, 24]}, Rules(5, 5))
    keep = ~lost_time & ~lost_bmi
    params, bse, pvalues = reference(v["months"][keep], v["death"][keep],
                                     np.column_stack([v["bmi"], v["treat"]])[keep], [6, 12, 24])
    assert got["n"] == int(keep.sum())
    assert_matches(got, params, bse, pvalues)


def test_collinear_covariates_are_refused() -> None:
    """Two covariates, one twice the other: det G = 0, the adjugate's inverse is 0 and
    the residual check refuses before any estimate opens."""
    table, _ = trial(60, 4)
    ages = table.values["age"]
    table.numeric("age2", [int(2 * a) for a in ages])
    got = run(COX, table, {"time": "months", "event": "death", "x": ["age", "age2"],
                           "breaks": [12, 24]}, Rules(5, 5))
    assert got == {"suppressed": True,
                   "reason": "cox_regression: the covariates are (near-)collinear: the "
                             "inverse of the information matrix did not converge"}
