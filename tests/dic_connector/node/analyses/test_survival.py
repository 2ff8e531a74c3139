"""``survival`` v1 and v2 against lifelines' Kaplan-Meier and an exact rational reference, on
three loopback parties: ties, all censored, all events, missing values, filters, groups,
refusals, the pilot's figures and the opening transcript; v2's Greenwood intervals, numbers
at risk (gated) and the median's interval against lifelines' bands."""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lifelines import KaplanMeierFitter
from lifelines.utils import median_survival_times

from dic_connector.dev.synthetic.pilot_design import pilot_patients
from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.catalog import catalog, get_analysis
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.km_band import DEGREE, BandPlan
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.node.analyses.survival import Survival, log_factors, survival_of
from dic_connector.node.analyses.survival_ci import (
    GREENWOOD_FRACTION_BITS,
    SurvivalIntervals,
    greenwood_factors,
    interval,
    z_of,
)
from tests.dic_connector.node.analyses.support import Table, observed, run

SURVIVAL = Survival()
#: |S_MPC - S| <= n 2^-41 S (module doc), far inside this at the sizes tested.
TOLERANCE = 1e-9


def exact_km(times: list[int], events: list[bool]) -> list[tuple[int, Fraction]]:
    """(event time, S just after it) as exact fractions, ties as lifelines treats them."""
    s, out = Fraction(1), []
    for t in sorted({t for t, e in zip(times, events, strict=True) if e}):
        at_risk = sum(1 for u in times if u >= t)
        deaths = sum(1 for u, e in zip(times, events, strict=True) if e and u == t)
        s *= Fraction(at_risk - deaths, at_risk)
        out.append((t, s))
    return out


def exact_at(steps: list[tuple[int, Fraction]], t: float) -> Fraction:
    below = [s for u, s in steps if u <= t]
    return below[-1] if below else Fraction(1)


def exact_median(steps: list[tuple[int, Fraction]]) -> int | None:
    return next((u for u, s in steps if s <= Fraction(1, 2)), None)


def withheld(times: list[int], events: list[bool], at: list[float], k: int) -> list[bool]:
    """Per requested time, whether S(t) is withheld: in ascending order, the events since the
    last released time (or the start) are between 1 and k - 1."""
    out, last = {}, -math.inf
    for t in sorted(at):
        d = sum(1 for u, e in zip(times, events, strict=True) if e and last < u <= t)
        out[t] = 0 < d < k
        last = last if out[t] else t
    return [out[t] for t in at]


def check_against_lifelines(
    times: list[int],
    events: list[bool],
    at: list[float],
    got: dict[str, Any],
    k: int,
    scale: int = 0,
    median_asked: bool = True,
) -> None:
    unit = 10**scale
    steps = exact_km(times, events)
    assert got["n"] == len(times)
    assert got["times"] == at
    kmf = KaplanMeierFitter().fit(np.array(times) / unit, np.array(events))
    hidden = withheld(times, events, [t * unit for t in at], k)
    for t, s, hide in zip(at, got["survival"], hidden, strict=True):
        if hide:
            assert s is None
            continue
        exact = exact_at(steps, t * unit)
        assert abs(s - float(exact)) <= TOLERANCE * max(float(exact), 1e-300)
        assert s == pytest.approx(float(kmf.predict(t)), rel=1e-9, abs=1e-12)
    median = exact_median(steps) if median_asked else None
    assert got["median"] == (None if median is None else median / unit)
    if median_asked and all(
        abs(float(s) - 0.5) > 1e-9 for _, s in steps
    ):  # lifelines' floats agree
        expected = kmf.median_survival_time_
        assert got["median"] == (None if np.isinf(expected) else expected)
    assert got["median_ci"] is None


def table(
    times: Sequence[int | None],
    events: Sequence[bool | None],
    scale: int = 0,
    declared: bool = True,
) -> Table:
    bounds: dict[str, Any] = {"minimum": 0, "maximum": 1000} if declared else {}
    return Table().numeric("t", times, scale=scale, kind="date", **bounds).boolean("e", events)


def draw(seed: int, n: int, events: str = "mixed") -> tuple[list[int], list[bool]]:
    rng = np.random.default_rng(seed)
    times = rng.integers(1, max(3, n // 3), n).tolist()  # many ties
    chance = {"mixed": 0.55, "none": 0.0, "all": 1.0}[events]
    return times, (rng.random(n) < chance).tolist()


@pytest.mark.parametrize(
    "seed, n, events, k",
    [
        (1, 12, "mixed", 1),
        (2, 30, "mixed", 2),
        (3, 9, "mixed", 1),
        (4, 20, "none", 5),
        (5, 15, "all", 3),
        (6, 40, "mixed", 3),
        (7, 6, "all", 1),
        (8, 50, "mixed", 5),
    ],
)
def test_matches_lifelines_with_ties(seed: int, n: int, events: str, k: int) -> None:
    times, flags = draw(seed, n, events)
    at = [7, 0.5, 3.5, 2, float(max(times)), 1000]  # any order; 7 may equal the maximum
    got = run(
        SURVIVAL,
        table(times, flags),
        {"time": "t", "event": "e", "times": list(dict.fromkeys(at)), "median": True},
        k,
    )
    (only,) = got["groups"]
    assert only["group"] is None and (got["time"], got["event"]) == ("t", "e")
    check_against_lifelines(times, flags, list(dict.fromkeys(at)), only, k)
    if k == 1:
        assert None not in only["survival"]


def test_exact_half_is_reached_and_the_last_death_ends_the_curve() -> None:
    times, flags = [1, 2, 3, 4, 5, 6], [True, False, True, False, True, True]
    got = run(
        SURVIVAL,
        table(times, flags),
        {"time": "t", "event": "e", "times": ["3", "6.0"], "median": True},  # as signed
        Rules(2, 1),
    )["groups"][0]
    assert got["survival"] == [pytest.approx(0.625), 0.0]  # 5/6 * 3/4, then 0
    assert got["median"] == 5  # S(5) = 5/16 after S(3) = 5/8
    two = run(
        SURVIVAL,
        table([1, 1, 2, 2, 3], [True, False, True, True, False]),
        {"time": "t", "event": "e", "times": [1], "median": True},
        Rules(1, 1),
    )["groups"][0]
    assert two["survival"] == [pytest.approx(0.8)] and two["median"] == 2


def test_scale_missing_values_filter_and_boolean_by() -> None:
    rng = np.random.default_rng(11)
    n = 48  # rows 0-5 fail the filter, 6-11 lack t, 12-17 lack e (each 0 or >= k)
    times = [int(v) for v in rng.integers(5, 60, n)]  # months * 10
    flags = [bool(v) for v in rng.random(n) < 0.5]
    arm = [i % 2 == 0 for i in range(n)]
    t_in: list[int | None] = [None if 6 <= i < 12 else v for i, v in enumerate(times)]
    e_in: list[bool | None] = [None if 12 <= i < 18 else v for i, v in enumerate(flags)]
    age = [40 if i < 6 else 50 + i for i in range(n)]
    tab = table(t_in, e_in, scale=1).boolean("arm", arm).numeric("age", age)
    at = [1.0, 2.5, 4.0]
    parameters = {
        "time": "t",
        "event": "e",
        "times": at,
        "median": True,
        "by": "arm",
        "filter": {"op": ">=", "column": "age", "value": 45},
    }
    got = run(SURVIVAL, tab, parameters, Rules(5, 1))
    assert [g["group"] for g in got["groups"]] == ["true", "false"]
    for group, want in zip(got["groups"], (True, False), strict=True):
        keep = [i for i in range(18, n) if arm[i] is want]
        check_against_lifelines(
            [times[i] for i in keep], [flags[i] for i in keep], at, group, 5, scale=1
        )


def test_a_small_group_is_refused_by_name_and_the_others_released() -> None:
    times, flags = draw(21, 25)
    levels = ["a", "b", "c"]
    arm = ["c" if i == 3 else ("a" if i % 2 else "b") for i in range(25)]
    tab = table(times, flags).categorical("arm", levels, arm)
    got = run(SURVIVAL, tab, {"time": "t", "event": "e", "times": [2], "by": "arm"}, 5)
    a, b, c = got["groups"]
    assert c == {"group": "c", "suppressed": True, "reason": c["reason"]}
    assert c["reason"].startswith("group 'c': ") and "fewer than 5 rows" in c["reason"]
    assert " 1 " not in c["reason"]
    for group, level in ((a, "a"), (b, "b")):
        keep = [i for i in range(25) if arm[i] == level]
        assert group["group"] == level and group["n"] == len(keep)
        check_against_lifelines(
            [times[i] for i in keep], [flags[i] for i in keep], [2], group, 5, median_asked=False
        )
        assert group["median"] is None  # not asked for


def test_empty_filter_is_a_clear_refusal() -> None:
    times, flags = draw(31, 20)
    tab = table(times, flags).numeric("age", [50] * 20)
    got = run(
        SURVIVAL,
        tab,
        {
            "time": "t",
            "event": "e",
            "times": [1],
            "filter": {"op": ">", "column": "age", "value": 60},
        },
        Rules(5, 1),
    )
    assert got == {"suppressed": True, "reason": got["reason"]}
    assert "fewer than 1 rows (min_subset_size) to the query set" in got["reason"]


def test_one_row_is_refused() -> None:
    got = run(SURVIVAL, table([3], [True]), {"time": "t", "event": "e", "times": [1]}, 5)
    assert got["suppressed"] is True and "fewer than 5 rows" in got["reason"]


def pilot_table() -> Table:
    patients = pilot_patients()
    return (
        Table()
        .numeric(
            "follow_up",
            [round(p.follow_up_months * 10) for p in patients],
            scale=1,
            kind="date",
            minimum=0,
            maximum=600,
        )
        .boolean("event_death", [p.death for p in patients])
        .categorical("ecog", ["0", "1", "2", "3", "4"], [str(p.ecog) for p in patients])
    )


PILOT_SEGMENTS = (("tm", 24), ("tr", 24))


def test_pilot_median_os_and_survival_at_one_and_two_years() -> None:
    """../shared/PILOT.md: median OS 19.0 months, 1-year OS 0.733, 2-year 0.481."""
    got, _ = observed(
        SURVIVAL,
        pilot_table(),
        {"time": "follow_up", "event": "event_death", "times": [12, 24], "median": True},
        Rules(5, 1),
        PILOT_SEGMENTS,
    )
    (pooled,) = got.aggregates["groups"]
    assert pooled["n"] == 48 and pooled["median"] == 19.0
    assert [round(s, 3) for s in pooled["survival"]] == [0.733, 0.481]


#: The pilot's curve of ECOG 0-1 at 6, 12 and 24 months with its median (transcript tests).
ECOG_01_CURVE: dict[str, Any] = {
    "time": "follow_up",
    "event": "event_death",
    "times": [6, 12, 24],
    "median": True,
    "groups": [
        {"label": "ECOG 0-1", "filter": {"op": "in", "column": "ecog", "values": ["0", "1"]}}
    ],
}


def test_opening_transcript() -> None:
    """What opens: the gate bits, the sort's comparison bits, then per group n, one log S
    per requested time and the median; nothing else (the spy in ``observed`` checks the
    transcript against every opening primitive called)."""
    parameters = ECOG_01_CURVE
    got, seen = observed(SURVIVAL, pilot_table(), parameters, Rules(5, 1), PILOT_SEGMENTS)
    shapes = [(o.name, o.kind, o.elements) for o in got.transcript]
    gate = "each contributor's query set >= 1; n >= 5; rows outside it 0 or >= 5"
    assert shapes[0] == (gate, "bits", 4)  # the query set is every row: N - n_g is its rest
    assert shapes[1][0] == "sort comparison bits of obliviously shuffled rows"
    assert shapes[1][1] == "bits" and shapes[1][2] == seen.sort_bits
    assert shapes[2:] == [
        ("group 'ECOG 0-1': n", "values", 1),
        ("group 'ECOG 0-1': events between requested times: 0 or >= 5", "bits", 6),
        ("group 'ECOG 0-1': log S(12)", "values", 1),
        ("group 'ECOG 0-1': median survival time (0: not reached)", "values", 1),
    ]
    patients = [p for p in pilot_patients() if p.ecog <= 1]
    (group,) = got.aggregates["groups"]
    months = [round(p.follow_up_months * 10) for p in patients]
    check_against_lifelines(months, [p.death for p in patients], [6, 12, 24], group, 5, scale=1)
    # 3 deaths by 6 months, 3 between 12 and 24: S(6) and S(24) are withheld; the bits of
    # (start, 6], (start, 12], (6, 12], (start, 24], (6, 24], (12, 24]: 1 = 1 to 4 deaths
    assert [s is None for s in group["survival"]] == [True, False, True]
    assert seen.bits[-1] == [1, 0, 0, 0, 0, 1]
    assert seen.arith_values[0] == 40


def test_survival_between_sparse_times_is_withheld() -> None:
    """One death between two requested times: the later S(t) would show its factor, so it
    is withheld; the next time whose span from the last released one holds >= k (or no)
    deaths is released (greedy over the sorted times, one circuit for all pairs)."""
    times = list(range(1, 21))
    flags = [t in (1, 2, 3, 4, 5, 9, 15, 16, 17, 18, 19) for t in times]
    at: list[float] = [20, 5, 8, 10, 6, 12]
    got = run(SURVIVAL, table(times, flags), {"time": "t", "event": "e", "times": at}, 5)
    (group,) = got["groups"]
    assert withheld(times, flags, at, 5) == [False, False, False, True, False, True]
    check_against_lifelines(times, flags, at, group, 5, median_asked=False)
    assert [s is None for s in group["survival"]] == [False, False, False, True, False, True]


def test_undeclared_range_is_checked_under_mpc() -> None:
    times, flags = draw(41, 10)
    got, _ = observed(
        SURVIVAL, table(times, flags, declared=False), {"time": "t", "event": "e", "times": [2]}, 5
    )
    names = [o.name for o in got.transcript]
    assert names[0].startswith("every 't' time in [")
    steps = exact_km(times, flags)
    assert got.aggregates["groups"][0]["survival"] == [
        pytest.approx(float(exact_at(steps, 2)), rel=1e-9)
    ]


def test_parameters_and_columns() -> None:
    tab = (
        table([1, None], [True, None])
        .categorical("many", [str(i) for i in range(9)], ["0", "1"])
        .categorical("arm", ["x", "y"], ["x", "y"])
        .numeric("age", [1, 2])
    )
    manifest = parse_manifest(tab.entries)
    assert get_analysis("survival").name == "survival"
    assert SURVIVAL.columns({"time": "t", "event": "e", "by": "arm"}, manifest) == [
        "t",
        "t__present",
        "e",
        "e__present",
        "arm=x",
        "arm=y",
    ]
    assert SURVIVAL.columns(
        {
            "time": "t",
            "event": "e",
            "groups": [{"label": "old", "filter": {"op": ">", "column": "age", "value": 1}}],
        }
    ) == ["t", "e", "age"]
    assert SURVIVAL.typed_columns({"time": "t", "event": "e", "by": "arm"}, manifest) == [
        "arm",
        "e",
        "t",
    ]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"time": "e", "event": "e"}, "'time': 'e' is boolean"),
        ({"time": "t", "event": "t"}, "'event': 't' is date"),
        ({"time": "t", "event": "e", "by": "age"}, "'by': 'age' is numeric"),
        (
            {
                "time": "t",
                "event": "e",
                "by": "arm",
                "groups": [{"label": "a", "filter": {"op": "is_present", "column": "t"}}],
            },
            "not both",
        ),
        (
            {
                "time": "t",
                "event": "e",
                "groups": [{"label": "a", "filter": {"op": "is_present", "column": "nope"}}] * 2,
            },
            "distinct",
        ),
        (
            {
                "time": "t",
                "event": "e",
                "groups": [{"label": "a", "filter": {"op": "is_present", "column": "nope"}}],
            },
            "groups/0/filter",
        ),
        ({"time": "t", "event": "e", "times": ["x"]}, "times/0"),
        ({"time": "t", "event": "e", "by": "many"}, "at most 8 groups"),
        ({"time": "t"}, "event"),
    ]
    for parameters, message in bad:
        with pytest.raises(AnalysisError, match=message):
            SURVIVAL.validate(parameters, manifest)


def test_log_factors_and_decoding() -> None:
    factors = log_factors(4, 6)
    assert factors[4:].tolist() == [0, 0] and factors[3] < -(1 << 49)
    assert [survival_of(int(v)) for v in np.cumsum(factors[:3])] == [
        pytest.approx(0.75, rel=1e-12),
        pytest.approx(0.5, rel=1e-12),
        pytest.approx(0.25, rel=1e-12),
    ]
    assert survival_of(int(factors.sum())) == 0.0


# -- survival v2: confidence intervals, numbers at risk, the median's interval -----------

SURVIVAL_V2 = SurvivalIntervals()
#: |bound_MPC - bound| (module doc of survival_ci), far inside this at the sizes tested.
BAND_TOLERANCE = 1e-7
#: A band within this of 1/2 may cross either way (module doc of km_band).
CROSSING_TOLERANCE = 1e-6


def at_risk_withheld(times: list[int], at: list[float], k: int) -> list[bool]:
    """Per requested time, whether its number at risk is withheld: in ascending order, the
    rows leaving the risk set since the last released time, or the number itself, are
    between 1 and k - 1."""
    out, last = {}, 0
    for t in sorted(at):
        left = sum(1 for u in times if u < t)
        at_risk = len(times) - left
        out[t] = 0 < left - last < k or 0 < at_risk < k
        last = last if out[t] else left
    return [out[t] for t in at]


def first_crossing(band: Any) -> float | None:
    """The first time a band (a pandas Series on lifelines' timeline) is <= 1/2."""
    below = band[band <= 0.5]
    return None if below.empty else float(below.index[0])


def check_v2(
    times: list[int],
    events: list[bool],
    at: list[float],
    got: dict[str, Any],
    k: int,
    alpha: float = 0.05,
    scale: int = 0,
    median_asked: bool = True,
) -> None:
    """v1's checks, then each interval against lifelines' band at t, the numbers at risk
    exactly (and withheld by the rule), and the median's interval: the first crossing of
    each band, and lifelines' median_survival_times where the band is monotone."""
    unit = 10**scale
    check_against_lifelines(times, events, at, {**got, "median_ci": None}, k, scale, median_asked)
    kmf = KaplanMeierFitter(alpha=alpha).fit(np.array(times) / unit, np.array(events))
    band = kmf.confidence_interval_
    assert got["alpha"] == alpha
    for t, s, ci in zip(at, got["survival"], got["survival_ci"], strict=True):
        if s is None:
            assert ci is None
            continue
        want = band.loc[:t].iloc[-1].tolist() if t >= band.index[0] else [1.0, 1.0]
        assert ci == pytest.approx(want, rel=BAND_TOLERANCE, abs=1e-12)
        assert ci[0] <= s <= ci[1]
    hidden = at_risk_withheld(times, [t * unit for t in at], k)
    for t, count, hide in zip(at, got["at_risk"], hidden, strict=True):
        assert count == (None if hide else sum(1 for u in times if u >= t * unit))
    if not median_asked:
        assert got["median_ci"] is None
        return
    for column, bound in zip(band.columns, got["median_ci"], strict=True):
        values = band[column]
        if ((values - 0.5).abs() < CROSSING_TOLERANCE).any():
            continue
        assert bound == first_crossing(values)
        if values.is_monotonic_decreasing:
            expected = float(median_survival_times(values.to_frame()))
            assert bound == (None if np.isinf(expected) else expected)


@pytest.mark.parametrize(
    "seed, n, events, k, alpha",
    [
        (1, 12, "mixed", 1, 0.05),
        (2, 30, "mixed", 2, 0.1),
        (4, 20, "none", 5, 0.05),
        (5, 15, "all", 3, 0.01),
        (6, 40, "mixed", 3, 0.2),
        (7, 6, "all", 1, 0.5),
        (8, 50, "mixed", 5, 0.001),
    ],
)
def test_v2_matches_lifelines_intervals_at_risk_and_median_ci(
    seed: int, n: int, events: str, k: int, alpha: float
) -> None:
    times, flags = draw(seed, n, events)
    at = list(dict.fromkeys([7, 0.5, 3.5, 2, float(max(times)), 1000]))
    parameters = {"time": "t", "event": "e", "times": at, "median": True, "alpha": str(alpha)}
    (only,) = run(SURVIVAL_V2, table(times, flags), parameters, k)["groups"]
    check_v2(times, flags, at, only, k, alpha)
    if k == 1:
        assert None not in only["survival"] and None not in only["at_risk"]
    if events == "none":
        assert only["survival_ci"] == [[1.0, 1.0]] * len(at)
        assert only["median_ci"] == [None, None]
    if events == "all":  # the last death empties the risk set: S = 0, band [0, 0]
        assert only["survival_ci"][-1] == [0.0, 0.0] and only["at_risk"][-1] == 0


@settings(max_examples=8, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 6), st.booleans()), min_size=2, max_size=24),
    st.sampled_from([0.001, 0.01, 0.05, 0.2, 0.5]),
    st.sampled_from([1, 2, 3]),
)
def test_v2_property_small_tied_samples(
    rows: list[tuple[int, bool]], alpha: float, k: int
) -> None:
    """Small samples with heavy ties (the bands are widest and least monotone there),
    every k boundary of the at-risk and event gates, any alpha."""
    times, flags = [t for t, _ in rows], [e for _, e in rows]
    at: list[float] = [1, 2.5, 4, 6]
    parameters = {"time": "t", "event": "e", "times": at, "median": True, "alpha": str(alpha)}
    got = run(SURVIVAL_V2, table(times, flags), parameters, Rules(k, 1))
    if len(rows) < k:
        assert got["suppressed"] is True
        return
    check_v2(times, flags, at, got["groups"][0], k, alpha)


def test_v2_non_monotone_band_first_crossing() -> None:
    """At alpha = 0.001 the lower band of 31 deaths dips to 0.414 at the first death and
    rises back above 1/2: the interval's lower bound is that first time (lifelines'
    searchsorted, which assumes a monotone band, answers 4)."""
    times = [4, 16, 3, 8, 12, 2, 16, 26, 25, 16, 11, 21, 25, 24, 1, 18, 19, 5, 14, 26, 18, 8,
             9, 17, 4, 16, 15, 16, 21, 14, 19]
    flags = [True] * len(times)
    parameters = {"time": "t", "event": "e", "times": [1], "median": True, "alpha": "0.001"}
    (got,) = run(SURVIVAL_V2, table(times, flags), parameters, 1)["groups"]
    assert got["median_ci"] == [1.0, 19.0] and got["alpha"] == 0.001
    kmf = KaplanMeierFitter(alpha=0.001).fit(times, flags)
    assert median_survival_times(kmf.confidence_interval_).iloc[0].tolist() == [4.0, 19.0]
    check_v2(times, flags, [1], got, 1, 0.001)


def test_v2_at_risk_between_sparse_times_is_withheld() -> None:
    """One row per time 1..20, k = 5: a number at risk opens when the rows leaving since
    the last released one and the number itself are 0 or >= 5."""
    times = list(range(1, 21))
    flags = [t % 3 == 0 for t in times]
    at: list[float] = [3, 6, 8, 11.5, 17, 18, 30]
    got = run(SURVIVAL_V2, table(times, flags), {"time": "t", "event": "e", "times": at}, 5)
    (group,) = got["groups"]
    # rows before t: 2 (withheld), 5, 7 (2 since 5: withheld), 11 (6 since 5), 16 (at risk
    # 4: withheld), 17 (at risk 3: withheld), 20 (9 since 11, at risk 0)
    assert group["at_risk"] == [None, 15, None, 9, None, None, 0]
    assert at_risk_withheld(times, at, 5) == [True, False, True, False, True, True, False]
    check_v2(times, flags, at, group, 5, median_asked=False)


def test_v2_groups_filter_and_scale() -> None:
    rng = np.random.default_rng(12)
    n = 40
    times = [int(v) for v in rng.integers(5, 60, n)]
    flags = [bool(v) for v in rng.random(n) < 0.6]
    arm = ["a" if i % 3 else "b" for i in range(n)]
    age = [40 if i < 15 else 60 for i in range(n)]  # 10 of a and 5 of b fail the filter
    tab = table(times, flags, scale=1).categorical("arm", ["a", "b"], arm).numeric("age", age)
    at = [1.0, 2.5, 4.0]
    parameters = {
        "time": "t",
        "event": "e",
        "times": at,
        "median": True,
        "by": "arm",
        "filter": {"op": ">=", "column": "age", "value": 45},
        "alpha": "0.1",
    }
    got = run(SURVIVAL_V2, tab, parameters, Rules(5, 1))
    for group, level in zip(got["groups"], ("a", "b"), strict=True):
        keep = [i for i in range(15, n) if arm[i] == level]
        assert group["group"] == level
        check_v2([times[i] for i in keep], [flags[i] for i in keep], at, group, 5, 0.1, 1)


def test_v2_opening_transcript() -> None:
    """What opens beyond v1: G(t) where S(t) opens, the at-risk gate bits (pairs, then one
    per time) and the released numbers at risk, the two bounds of the median's interval."""
    parameters = ECOG_01_CURVE
    got, seen = observed(SURVIVAL_V2, pilot_table(), parameters, Rules(5, 1), PILOT_SEGMENTS)
    shapes = [(o.name, o.kind, o.elements) for o in got.transcript]
    assert shapes[1] == ("sort comparison bits of obliviously shuffled rows", "bits",
                         seen.sort_bits)
    g = "group 'ECOG 0-1': "
    assert shapes[2:] == [
        (f"{g}n", "values", 1),
        (f"{g}events between requested times: 0 or >= 5", "bits", 6),
        (f"{g}log S(12)", "values", 1),
        (f"{g}Greenwood sum G(12)", "values", 1),
        (
            f"{g}rows leaving the risk set between requested times, and at risk at each: "
            "0 or >= 5",
            "bits",
            9,
        ),
        (f"{g}number at risk at 6", "values", 1),
        (f"{g}number at risk at 12", "values", 1),
        (f"{g}median survival time (0: not reached)", "values", 1),
        (f"{g}median CI: first time the lower band <= 1/2 (0: not reached)", "values", 1),
        (f"{g}median CI: first time the upper band <= 1/2 (0: not reached)", "values", 1),
    ]
    patients = [p for p in pilot_patients() if p.ecog <= 1]
    (group,) = got.aggregates["groups"]
    months = [round(p.follow_up_months * 10) for p in patients]
    check_v2(months, [p.death for p in patients], [6, 12, 24], group, 5, scale=1)
    assert [s is None for s in group["survival"]] == [True, False, True]
    # 4 at risk at 24 months: withheld; the upper band stays above 1/2 (not reached)
    assert group["at_risk"] == [29, 18, None] and group["median_ci"] == [12.5, None]


def test_pilot_median_os_with_its_interval() -> None:
    got = run(
        SURVIVAL_V2,
        pilot_table(),
        {"time": "follow_up", "event": "event_death", "times": [12, 24], "median": True},
        Rules(5, 1),
        PILOT_SEGMENTS,
    )
    (pooled,) = got["groups"]
    assert pooled["median"] == 19.0
    assert [round(s, 3) for s in pooled["survival"]] == [0.733, 0.481]
    patients = pilot_patients()
    months = [p.follow_up_months for p in patients]
    kmf = KaplanMeierFitter().fit(np.round(np.array(months) * 10) / 10, [p.death for p in patients])
    bounds = median_survival_times(kmf.confidence_interval_).iloc[0].tolist()
    assert bounds == [13.2, math.inf] and pooled["median_ci"] == [13.2, None]  # not reached


def test_v1_stays_as_it_was_and_v2_is_the_newest() -> None:
    assert type(get_analysis("survival")) is Survival
    assert type(get_analysis("survival", "2")) is SurvivalIntervals
    assert catalog()["survival"].version == "2"
    v1 = run(SURVIVAL, table([1, 2, 3], [True, False, True]), {"time": "t", "event": "e",
                                                                 "times": [2]}, 1)
    assert set(v1["groups"][0]) == {"group", "n", "times", "survival", "median", "median_ci"}
    manifest = parse_manifest(table([1], [True]).entries)
    for alpha, message in (
        ("0.0001", "need 0.001 <= alpha <= 0.5"),
        ("0.7", "need 0.001 <= alpha <= 0.5"),
        (0.05, "alpha"),  # signed requests carry no floats
        ("1.5", "alpha"),
    ):
        with pytest.raises(AnalysisError, match=message):
            SURVIVAL_V2.validate({"time": "t", "event": "e", "alpha": alpha}, manifest)
    SURVIVAL_V2.validate({"time": "t", "event": "e", "alpha": "0.05"}, manifest)
    assert "number at risk" in SURVIVAL_V2.discloses and "Greenwood" in SURVIVAL_V2.discloses
    # a standing policy for survival (or *) covers v1; v2 only under its own scope
    assert SURVIVAL.policy_scope({"time": "t", "event": "e"}) == "survival"
    assert SURVIVAL_V2.policy_scope({"time": "t", "event": "e"}) == "survival:intervals"


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 10**6), st.data())
def test_greenwood_terms_telescope_over_ties(n: int, data: st.DataObject) -> None:
    """sum_(k<d) 1/((n-k)(n-k-1)) = d/(n(n-d)), lifelines' term, and the rounded public
    coefficients sum to it within d/2 units of 2^-60."""
    d = data.draw(st.integers(1, min(n - 1, 50)))
    exact = sum(Fraction(1, (n - k) * (n - k - 1)) for k in range(d))
    assert exact == Fraction(d, n * (n - d))
    coefficients = greenwood_factors(n, n)[:d]  # the tie's rows come first here
    got = Fraction(int(coefficients.sum()), 1 << GREENWOOD_FRACTION_BITS)
    assert abs(got - exact) <= Fraction(d, 1 << (GREENWOOD_FRACTION_BITS + 1))


def test_greenwood_factors_and_interval_edges() -> None:
    assert greenwood_factors(4, 6).tolist() == [
        round(Fraction(2**60, 12)), round(Fraction(2**60, 6)), 2**59, 0, 0, 0]  # n - j = 4, 3, 2; 1
    z = z_of(0.05)
    assert z == pytest.approx(1.959963984540054)
    assert interval(0, None, z) == [1.0, 1.0]  # no event yet: lifelines fills NaN with 1
    assert interval(int(np.sum(log_factors(3, 3))), 0, z) == [0.0, 0.0]  # S = 0
    log_s = int(log_factors(4, 4)[0])  # S = 3/4 after one death among 4
    lower, upper = interval(log_s, round(Fraction(2**60, 12)), z)
    kmf = KaplanMeierFitter().fit([1, 2, 3, 4], [True, False, False, False])
    assert [lower, upper] == pytest.approx(kmf.confidence_interval_.loc[1.0].tolist(), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.001, 0.01, 0.05, 0.2, 0.5])
def test_band_plan_bounds_hold(alpha: float) -> None:
    """Below 2^k_min neither band can cross (log(H / log 2)^2 > 2 z^2 >= z^2 G / H^2);
    from 2^e on both have (2^e log(2^e / log 2) >= z > z sqrt(G)), so the logarithm is
    needed only in between."""
    plan = BandPlan.of(z_of(alpha))
    low = 2.0**plan.k_min
    assert math.log(low / math.log(2)) ** 2 > 2 * plan.z**2
    high = 2.0**plan.e
    assert high > math.log(2) and high * math.log(high / math.log(2)) >= plan.z
    assert len(plan.thresholds()) == plan.e - plan.k_min + 2
    assert len(plan.log_coefficients()) == DEGREE and len(plan.log_constants()) == len(
        plan.exponents
    )


@pytest.mark.parametrize(
    "times, flags, median_ci",
    [
        ([3], [True], [3.0, 3.0]),  # S drops to 0: the band [0, 0] crosses at once
        ([3], [False], [None, None]),
        ([2, 2], [True, True], [2.0, 2.0]),
        ([1, 2], [False, True], [2.0, 2.0]),
        ([5, 5, 5], [True, False, True], [5.0, None]),  # a censoring in the tie
    ],
)
def test_v2_one_to_three_rows(times: list[int], flags: list[bool], median_ci: list[Any]) -> None:
    parameters = {"time": "t", "event": "e", "times": [1, 3, 6], "median": True}
    (got,) = run(SURVIVAL_V2, table(times, flags), parameters, Rules(1, 1))["groups"]
    assert got["median_ci"] == median_ci
    check_v2(times, flags, [1, 3, 6], got, 1)


@pytest.mark.parametrize("seed, n, alpha", [(301, 400, "0.05"), (302, 1200, "0.001"),
                                            (303, 800, "0.5")])
def test_v2_median_ci_at_hundreds_of_rows(seed: int, n: int, alpha: str) -> None:
    """Hazards from 1/n (below 2^k_min: decided without the logarithm) to S = 0, many
    distinct times: the first crossings of lifelines' bands."""
    rng = np.random.default_rng(seed)
    times = [int(v) for v in rng.integers(1, 700, n)]
    flags = [bool(v) for v in rng.random(n) < 0.7]
    parameters = {"time": "t", "event": "e", "times": [100], "median": True, "alpha": alpha}
    (got,) = run(SURVIVAL_V2, table(times, flags), parameters, 5)["groups"]
    assert None not in got["median_ci"]
    check_v2(times, flags, [100], got, 5, float(alpha))
