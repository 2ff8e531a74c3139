"""``logrank`` v1 against lifelines' ``logrank_test`` and an exact rational O - E and V, on
three loopback parties: ties across groups, all censored, groups by a boolean, a two-level
categorical or two filters, refusals, the pilot's chi2 and the opening transcript."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from lifelines.statistics import logrank_test

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.logrank import (
    RECIPROCAL_BITS,
    Logrank,
    fraction_bits,
    reciprocals,
    variance_bits,
)
from dic_connector.node.analyses.manifest import parse_manifest
from tests.dic_connector.node.analyses.support import Table, observed, run
from tests.dic_connector.node.analyses.test_survival import PILOT_SEGMENTS, pilot_table

LOGRANK = Logrank()
ECOG_GROUPS = [
    {"label": "ECOG 0-1", "filter": {"op": "in", "column": "ecog", "values": ["0", "1"]}},
    {"label": "ECOG 2", "filter": {"op": "==", "column": "ecog", "value": "2"}},
]


def exact(
    times: Sequence[int], events: Sequence[bool], first: Sequence[bool]
) -> tuple[Fraction, Fraction]:
    """O - E of the first group and V, exactly (the module doc's formulas)."""
    oe, v = Fraction(0), Fraction(0)
    for t in sorted({t for t, e in zip(times, events, strict=True) if e}):
        risk = [i for i, u in enumerate(times) if u >= t]
        n, n1 = len(risk), sum(1 for i in risk if first[i])
        dead = [i for i in risk if times[i] == t and events[i]]
        d, d1 = len(dead), sum(1 for i in dead if first[i])
        oe += d1 - Fraction(d * n1, n)
        if n > 1:
            v += Fraction(n1 * (n - n1) * d * (n - d), n * n * (n - 1))
    return oe, v


def check(
    times: Sequence[int],
    events: Sequence[bool],
    first: Sequence[bool],
    got: dict[str, Any],
    k: int,
    labels: tuple[str, str],
) -> None:
    t, e, g = np.array(times), np.array(events), np.array(first)
    deaths = [int(e[g].sum()), int(e[~g].sum())]
    few = [label for label, d in zip(labels, deaths, strict=True) if 0 < d < k]
    if few:
        assert got == {
            "suppressed": True,
            "reason": f"group '{few[0]}': between 1 and {k - 1} "
            "events (min_cell_count); O - E would disclose in which group they are",
        }
        return
    oe, v = exact(times, events, first)
    assert got["df"] == 1
    assert [x["group"] for x in got["groups"]] == list(labels)
    assert [x["n"] for x in got["groups"]] == [int(g.sum()), int((~g).sum())]
    assert got["observed_minus_expected"] == pytest.approx(float(oe), abs=1e-9)
    a_bits, _ = variance_bits(len(times))
    bound = 7 * int(e.sum()) * 2.0**-a_bits  # the module doc's fixed-point error of V
    assert abs(got["variance"] - float(v)) <= bound
    if v == 0:
        assert got["chi2"] is None and got["p"] is None
        return
    reference = logrank_test(t[g], t[~g], e[g], e[~g])
    relative = 4 * bound / float(v) + 1e-9  # chi2 = (O - E)^2 / V: V's error dominates
    assert got["chi2"] == pytest.approx(reference.test_statistic, rel=relative)
    assert got["p"] == pytest.approx(reference.p_value, rel=relative)


def table(times: Sequence[int], events: Sequence[bool]) -> Table:
    return Table().numeric("t", times, kind="date", minimum=0, maximum=1000).boolean("e", events)


@pytest.mark.parametrize(
    "seed, n, chance, k",
    [(1, 20, 0.6, 5), (2, 40, 0.5, 5), (3, 16, 1.0, 5), (4, 30, 0.3, 2), (5, 14, 0.2, 3)],
)
def test_matches_lifelines_with_ties_by_a_boolean(seed: int, n: int, chance: float, k: int) -> None:
    rng = np.random.default_rng(seed)
    times = rng.integers(1, max(3, n // 4), n).tolist()  # ties within and across groups
    events = (rng.random(n) < chance).tolist()
    arm = [i % 2 == 0 for i in range(n)]
    got = run(
        LOGRANK,
        table(times, events).boolean("arm", arm),
        {"time": "t", "event": "e", "by": "arm"},
        k,
    )
    check(times, events, arm, got, k, ("true", "false"))


def test_all_censored_has_no_statistic() -> None:
    times = list(range(1, 13))
    arm = ["a", "b"] * 6
    got = run(
        LOGRANK,
        table(times, [False] * 12).categorical("arm", ["a", "b"], arm),
        {"time": "t", "event": "e", "by": "arm"},
        5,
    )
    check(times, [False] * 12, [x == "a" for x in arm], got, 5, ("a", "b"))


def test_two_filters_leave_the_other_rows_out() -> None:
    rng = np.random.default_rng(9)
    n = 45
    times = rng.integers(1, 12, n).tolist()
    events = (rng.random(n) < 0.6).tolist()
    dose = [int(v) for v in rng.integers(40, 120, n)]
    groups = [
        {"label": "low", "filter": {"op": "<", "column": "dose", "value": 70}},
        {"label": "high", "filter": {"op": ">=", "column": "dose", "value": 90}},
    ]
    got = run(
        LOGRANK,
        table(times, events).numeric("dose", dose),
        {"time": "t", "event": "e", "groups": groups},
        Rules(5, 1),
    )
    keep = [i for i in range(n) if dose[i] < 70 or dose[i] >= 90]
    check(
        [times[i] for i in keep],
        [events[i] for i in keep],
        [dose[i] < 70 for i in keep],
        got,
        5,
        ("low", "high"),
    )
    assert "chi2" in got


def test_pilot_ecog_0_1_vs_2() -> None:
    """../shared/PILOT.md: log-rank ECOG 0-1 vs 2, chi2 = 1.800, p = 0.180; and what opens."""
    got, seen = observed(
        LOGRANK,
        pilot_table(),
        {"time": "follow_up", "event": "event_death", "groups": ECOG_GROUPS},
        Rules(5, 1),
        PILOT_SEGMENTS,
    )
    result = got.aggregates
    assert (round(result["chi2"], 3), round(result["p"], 3)) == (1.800, 0.180)
    assert [g["n"] for g in result["groups"]] == [40, 8]
    gate = "each contributor's query set >= 1; n >= 5; rows outside it 0 or >= 5"
    assert [(o.name, o.kind, o.elements) for o in got.transcript] == [
        (gate, "bits", 4),
        (gate, "bits", 4),
        ("every number of rows in both groups in [0, 0]", "bits", 1),
        ("events per group: 0 or >= 5", "bits", 2),
        ("sort comparison bits of obliviously shuffled rows", "bits", seen.sort_bits),
        ("group 'ECOG 0-1': n", "values", 1),
        ("group 'ECOG 2': n", "values", 1),
        ("O - E of the first group (fixed point)", "values", 1),
        ("V (fixed point)", "values", 1),
    ]
    assert seen.arith_values[:2] == [40, 8]


def test_refusals_name_the_group_or_the_overlap() -> None:
    times = list(range(1, 21))
    events = [i % 3 != 0 for i in range(20)]
    split = [
        {"label": "a", "filter": {"op": "<=", "column": "t", "value": 9}},
        {"label": "b", "filter": {"op": ">=", "column": "t", "value": 18}},
    ]
    small = run(
        LOGRANK, table(times, events), {"time": "t", "event": "e", "groups": split}, Rules(5, 1)
    )
    assert small["suppressed"] is True and small["reason"].startswith("group 'b': ")
    assert "fewer than 5 rows" in small["reason"] and " 3 " not in small["reason"]
    both = [
        {"label": "early", "filter": {"op": "<=", "column": "t", "value": 12}},
        {"label": "late", "filter": {"op": ">=", "column": "t", "value": 8}},
    ]
    overlap = run(
        LOGRANK, table(times, events), {"time": "t", "event": "e", "groups": both}, Rules(5, 1)
    )
    assert overlap == {
        "suppressed": True,
        "reason": "logrank: the two groups overlap (a row passes both filters)",
    }


def test_needs_exactly_two_groups() -> None:
    tab = table([1, 2], [True, False]).categorical("arm", ["a", "b", "c"], ["a", "b"])
    manifest = parse_manifest(tab.entries)
    for parameters in (
        {"time": "t", "event": "e"},
        {"time": "t", "event": "e", "by": "arm"},
        {
            "time": "t",
            "event": "e",
            "groups": [{"label": "a", "filter": {"op": "is_present", "column": "arm"}}],
        },
    ):
        with pytest.raises(AnalysisError, match="exactly two groups"):
            LOGRANK.validate(parameters, manifest)


def test_reciprocals_and_their_headroom() -> None:
    bits = fraction_bits(48)
    assert 48 << bits < 1 << 62
    a_bits, b_bits = variance_bits(48)
    assert (a_bits, b_bits) == (29, 29) and variance_bits(100_000) == (23, 24)
    at_risk, inverse, factor = reciprocals(4, 6, 10)
    assert at_risk.tolist() == [4, 3, 2, 1, 0, 0]
    assert inverse.tolist() == [256, 341, 512, 1024, 0, 0]
    one = 1 << RECIPROCAL_BITS
    assert factor.tolist() == [round(one / 3), round(one / 2), one, 0, 0, 0]


def test_too_many_rows_for_the_fixed_point_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Logrank, "max_rows", 19)
    times = list(range(1, 21))
    arm = [i % 2 == 0 for i in range(20)]
    got = run(
        LOGRANK,
        table(times, [True] * 20).boolean("arm", arm),
        {"time": "t", "event": "e", "by": "arm"},
        5,
    )
    assert got == {
        "suppressed": True,
        "reason": "logrank: more than 19 rows in the two "
        "groups; v1 computes V in a 64-bit ring, whose precision it would lose "
        "(see its documentation)",
    }
