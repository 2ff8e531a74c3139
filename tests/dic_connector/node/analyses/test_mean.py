"""mean v1 against numpy, including the overflow bound and suppression."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.disclosure import overflow_bound
from dic_connector.node.analyses.mean import Mean, decimal_string
from tests.dic_connector.node.analyses.support import Table, run, spy_openings

MEAN = Mean()


def reference(values: list[int | None], scale: int, k: int) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    n = len(present)
    if n < k:
        return {"n": f"<{k}", "suppressed": True}
    total = sum(present)
    return {"n": n, "sum": decimal_string(total, scale),
            "mean": float(Fraction(total, n * 10**scale))}


@st.composite
def columns(draw: st.DrawFn) -> tuple[list[int | None], int]:
    """Values anywhere in the overflow-safe range for their row count, edges favoured."""
    rows = draw(st.integers(0, 25))
    bound = overflow_bound(rows)
    value = st.one_of(st.integers(-bound, bound - 1),
                      st.sampled_from([0, 1, -1, bound - 1, -bound]), st.none())
    return draw(st.lists(value, min_size=rows, max_size=rows)), draw(st.integers(0, 4))


@settings(max_examples=40, deadline=None)
@given(columns(), st.integers(1, 6), st.sampled_from(["numeric", "date"]))
def test_mean_matches_plaintext(column: tuple[list[int | None], int], k: int,
                                kind: str) -> None:
    values, scale = column
    table = Table().numeric("x", values, scale=scale, kind=kind, present=True)
    out = run(MEAN, table, {"column": "x"}, k)
    assert out == reference(values, scale, k)
    if not out.get("suppressed"):
        present = np.array([v for v in values if v is not None], dtype=np.float64) / 10**scale
        # numpy sums in float64: allow its rounding error (cancellation of large values)
        slack = 1e-12 * float(np.mean(np.abs(present))) + 1e-12
        assert out["mean"] == pytest.approx(float(np.mean(present)), rel=1e-12, abs=slack)


@pytest.mark.parametrize("values", [[7], [0, 0, 0], [-3, -5, -8], [2**40, 2**40, -1]])
def test_edges_without_indicator(values: list[int]) -> None:
    table = Table().numeric("x", values, scale=2)
    assert run(MEAN, table, {"column": "x"}, 1) == reference(list(values), 2, 1)


def test_sum_is_an_exact_decimal_string() -> None:
    table = Table().numeric("x", [2**62 // 8, 2**62 // 8, 3, 1, 1], scale=2)
    out = run(MEAN, table, {"column": "x"}, 5)
    assert out["sum"] == "11529215046068469.81"  # 2^60 + 5 at scale 2: beyond float's 2^53
    assert out["mean"] == float(Fraction(2**60 + 5, 500))
    assert decimal_string(0, 3) == "0.000" and decimal_string(-1234, 2) == "-12.34"


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5)])
def test_suppressed_mean_opens_nothing_but_the_bit(n: int, k: int,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    values: list[int | None] = [10 * i + 1 for i in range(n)] + [None, None]
    seen = spy_openings(monkeypatch)
    out = run(MEAN, Table().numeric("x", values), {"column": "x"}, k)
    if n < k:
        assert out == {"n": f"<{k}", "suppressed": True}
        assert seen.bits == [[1]] and seen.arith == []
    else:
        total = sum(10 * i + 1 for i in range(n))
        assert out == reference(values, 0, k)
        assert seen.bits == [[0], [1]]  # threshold, then the overflow range check
        assert seen.arith == [[n, total]]


def test_value_beyond_the_overflow_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = 6
    bound = overflow_bound(rows)
    seen = spy_openings(monkeypatch)
    for bad in (bound, -bound - 1, 2**63 - 1, -(2**63)):
        table = Table().numeric("x", [1, 2, 3, bad, 5, 6])
        with pytest.raises(DataValidationError, match="cannot overflow"):
            run(MEAN, table, {"column": "x"}, 5)
    assert seen.arith == []  # neither n nor the sum was opened
    for good in (bound - 1, -bound):
        table = Table().numeric("x", [good] * rows)
        assert run(MEAN, table, {"column": "x"}, 5) == reference([good] * rows, 0, 5)


def test_declared_range_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_openings(monkeypatch)
    table = Table().numeric("age", [30, 41, None, 77, 65, 18], scale=1, minimum=0,
                            maximum=120)
    out = run(MEAN, table, {"column": "age"}, 5)
    assert out == reference([30, 41, None, 77, 65, 18], 1, 5)
    assert out["mean"] == pytest.approx(4.62)
    assert seen.bits == [[0]]  # only the threshold bit
