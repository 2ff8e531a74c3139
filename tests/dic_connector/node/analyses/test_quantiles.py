"""quantiles v1 against numpy (``method="linear"`` is R type 7), exactly, and the reference rules.

Every run checks the three releases are equal and the transcript against the independent spy
(``support.observed``); extremes need the request's consent and, at the node, a policy scope
that ``*`` does not cover.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.quantiles import (
    EXTREMES_SCOPE,
    Quantiles,
    is_extreme,
    rows_for_interior,
    type7_terms,
)
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

QUANTILES = Quantiles()
PILOT_PROBS = [0, 0.25, 0.5, 0.75, 1]


def exact_type7(values: list[int], p: Fraction) -> Fraction:
    """R type 7 in exact rationals (the reference numpy is checked against too)."""
    xs = sorted(values)
    h = (len(xs) - 1) * p
    lo = h.numerator // h.denominator
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (h - lo) * (xs[hi] - xs[lo])


def check(case: Case, probs: list[float], scale: int = 0) -> None:
    table = Table().numeric("x", case.values, scale=scale, present=case.indicator)
    parameters = {"column": "x", "probabilities": probs, "extremes": True}
    got, seen = observed(QUANTILES, table, parameters, case.rules, case.segments)
    expected = reference.median(case.values, scale, case.segments, case.rules,
                                case.indicator)  # the same gate and key-range check
    assert_transcript_matches(got.transcript, seen)
    if expected.refusal is not None:
        reference.assert_release(got, seen, expected, case.segments, case.rules)
        return
    present = [v for v in case.values if v is not None]
    want = [exact_type7(present, Fraction(Decimal(repr(p)))) / 10**scale for p in probs]
    assert got.aggregates["n"] == len(present)
    assert got.aggregates["quantiles"] == [float(w) for w in want]
    assert got.aggregates["probabilities"] == [str(Decimal(repr(p)).normalize())
                                               for p in probs]
    numpy = np.quantile(np.array(present, dtype=np.float64) / 10**scale, probs,
                        method="linear")
    assert got.aggregates["quantiles"] == pytest.approx(list(numpy), rel=1e-9, abs=1e-9)
    # one value per probability, after n; nothing else (besides sort bits and gate bits)
    values = [o for o in seen.openings if o.kind == "values"]
    assert len(values) == 1 + len(probs)


VALUE = st.integers(-1000, 1000) | st.sampled_from([0, -1, 1, 10**9, -(10**9)])
PROBS = st.lists(st.sampled_from([0, 0.01, 0.1, 0.25, 1 / 3, 0.5, 0.6, 0.75, 0.9, 0.999, 1]),
                 min_size=1, max_size=5, unique=True)


@settings(max_examples=25, deadline=None)
@given(cases(VALUE), PROBS, st.integers(0, 2))
def test_quantiles_match_exact_type7_and_numpy(case: Case, probs: list[float],
                                                scale: int) -> None:
    check(case, [float(Decimal(repr(p)).quantize(Decimal("0.000001"))) for p in probs],
          scale)


@pytest.mark.parametrize("values, k", [
    ([5], 1), ([0, 0, 0, 0], 1), ([-7, -3, -3, -9], 2), ([1, 2], 2),
    ([None, 3, None, 1, 2, None, None], 3), ([], 1), ([None, 9], 2),
])
def test_edges(values: list[int | None], k: int) -> None:
    """n = 1, 2, ties, negatives, missing values, the empty table (refused, not a crash)."""
    segments: Segments = (("site", len(values)),)
    check(Case(values, segments, Rules.of(k), any(v is None for v in values)), PILOT_PROBS,
          scale=1)


def test_pilot_age_vectors() -> None:
    """The published quantile vectors of ../shared/PILOT.md, from ages that give them."""
    munich = [380, 520, 550, 580, 600, 625, 625, 630, 640, 650, 660, 660, 660, 670, 680, 700,
              710, 720, 730, 750, 780, 800, 850, 910]  # age * 10
    published = [38.0, 62.5, 66.0, 72.25, 91.0]
    assert list(np.quantile(np.array(munich) / 10, PILOT_PROBS)) == published
    table = Table().numeric("age", munich, scale=1, minimum=0, maximum=120)
    got = run(QUANTILES, table, {"column": "age", "extremes": True}, 5)
    assert got["quantiles"] == published
    assert got["probabilities"] == ["0", "0.25", "0.5", "0.75", "1"]


def test_extremes_need_consent_in_the_request() -> None:
    table = Table().numeric("x", list(range(20)))
    for probs in ([0], [1], [0.25, 1]):
        with pytest.raises(AnalysisError, match="extremes"):
            QUANTILES.validate({"column": "x", "probabilities": probs},
                               {e["name"]: _info(e) for e in table.entries})
    assert QUANTILES.policy_scope({"column": "x"}) == "quantiles"
    assert QUANTILES.policy_scope({"column": "x", "extremes": True}) == EXTREMES_SCOPE


def _info(entry: dict[str, object]):  # type: ignore[no-untyped-def]
    from dic_connector.node.analyses.base import ColumnInfo
    return ColumnInfo.from_manifest(entry)  # type: ignore[arg-type]


@pytest.mark.parametrize("n, allowed", [(5, False), (9, False), (10, False), (11, True)])
def test_interior_quantiles_refused_below_the_rows_they_need(
        n: int, allowed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """p = 0.1 is fixed by the minimum until (n - 1) 0.1 >= 1, i.e. n >= 11; only one more
    bit opens for it, and the refusal names the probability and the rule, not n."""
    assert rows_for_interior(Decimal("0.1")) == 11
    assert is_extreme(n, Decimal("0.1")) is not allowed
    seen = spy_openings(monkeypatch)
    values: list[int | None] = [(7 * i) % 13 for i in range(n)]
    got, _ = observed(QUANTILES, Table().numeric("x", values, present=True),
                      {"column": "x", "probabilities": [0.1, 0.5]}, Rules.of(5))
    assert_transcript_matches(got.transcript, seen)
    if allowed:
        present = [v for v in values if v is not None]
        assert got.aggregates["quantiles"] == list(np.quantile(present, [0.1, 0.5]))
    else:
        assert got.aggregates["suppressed"] is True
        assert "probability 0.1 needs at least 11 rows" in got.aggregates["reason"]
        assert str(n) not in got.aggregates["reason"].replace("11", "")
        assert seen.arith == [] and seen.sort_bits == 0
        assert seen.bits[-1] == [1]  # the one extra bit: n below the rows needed


def test_interior_check_is_skipped_when_k_already_covers_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_openings(monkeypatch)
    values: list[int | None] = [4, 1, 3, 2, 5, 9]
    got, _ = observed(QUANTILES, Table().numeric("x", values, present=True),
                      {"column": "x", "probabilities": [0.5]}, Rules.of(3))
    assert got.aggregates["quantiles"] == [3.5]
    assert seen.bits == [[0, 0, 0], [1]]  # the query set, the key range; no interior bit


def test_values_outside_the_key_range_are_refused() -> None:
    table = Table().numeric("x", [1, 2, 2**61, 4, 5, 6, 7])
    with pytest.raises(DataValidationError, match="key range"):
        run(QUANTILES, table, {"column": "x", "extremes": True}, 5)


@pytest.mark.parametrize("probs, message", [
    ([0.1234567], "more than 6 decimal places"), ([0.5, 0.5], "non-unique|distinct"),
    ([1.5], "maximum|not in"), ([], "non-empty|should be non-empty|too short"),
    ([True], "number"), (["half"], "not a decimal"), (["0.1234567"], "more than 6 decimal"),
    (["1.5"], "not in"),
])
def test_bad_probabilities(probs: list[object], message: str) -> None:
    table = Table().numeric("x", list(range(20)))
    with pytest.raises(AnalysisError, match=message):
        QUANTILES.validate({"column": "x", "probabilities": probs, "extremes": True},
                           {e["name"]: _info(e) for e in table.entries})


def test_decimal_strings_are_the_probabilities_they_write() -> None:
    """A signed request writes probabilities as strings (canonical JSON has no floats)."""
    table = Table().numeric("x", list(range(20)))
    for text in (["0.25", "0.5", "0.75"], ["0.1", "0.9"]):
        as_numbers = [float(p) for p in text]
        assert run(QUANTILES, table, {"column": "x", "probabilities": text}, 5) == run(
            QUANTILES, table, {"column": "x", "probabilities": as_numbers}, 5)
    got = run(QUANTILES, table, {"column": "x", "probabilities": ["0.25"]}, 5)
    assert got["quantiles"] == list(np.quantile(range(20), [0.25]))


def test_type7_terms_are_exact() -> None:
    assert type7_terms(24, Decimal("0.25")) == (5, 6, 3, 4)  # h = 5.75
    assert type7_terms(48, Decimal("0.75")) == (35, 36, 1, 4)  # h = 35.25
    assert type7_terms(1, Decimal("1")) == (0, 0, 0, 1)
