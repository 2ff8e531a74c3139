"""histogram v1 against numpy.histogram, with primary and secondary suppression.

Every run checks that the three releases are equal and the transcript against the
independent spy (``support.observed``); the values opened are n and exactly the cells
shown, and no hidden cell below k is determined by n and the opened cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.histogram import Histogram
from dic_connector.node.analyses.manifest import parse_manifest
from tests.dic_connector.node.analyses.support import Segments, Table, observed

HISTOGRAM = Histogram()


def numpy_cells(values: list[float], breaks: list[float], right: bool) -> list[int]:
    """below, bins..., above by numpy.histogram ((b_i, b_i+1] by mirroring the axis)."""
    v = np.asarray(values, dtype=np.float64)
    b = np.asarray(breaks, dtype=np.float64)
    bins = np.histogram(-v, bins=-b[::-1])[0][::-1] if right else np.histogram(v, bins=b)[0]
    return [int((v < b[0]).sum()), *(int(c) for c in bins), int((v > b[-1]).sum())]


def assert_undetermined(shown: list[int | None], cells: list[int], n: int, k: int,
                        bounded: bool = True) -> None:
    """No hidden cell below k is pinned by n, the opened cells and the marks (a hidden
    cell is in [0, k - 1] when '<k', >= k when 'suppressed'; without marks, ``bounded``
    False, in [0, n]), unless every hidden cell is empty."""
    hidden = [i for i, v in enumerate(shown) if v is None]
    mass = n - sum(v for v in shown if v is not None)
    assert mass == sum(cells[i] for i in hidden)
    if mass == 0:
        return
    low = {i: (0 if cells[i] < k or not bounded else k) for i in hidden}
    high = {i: (k - 1 if cells[i] < k and bounded else mass) for i in hidden}
    for i in hidden:
        if cells[i] >= k:
            continue
        others_low = sum(low[j] for j in hidden if j != i)
        others_high = sum(high[j] for j in hidden if j != i)
        lo, hi = max(low[i], mass - others_high), min(high[i], mass - others_low)
        assert lo < hi, (shown, cells, i, (lo, hi))


def check(values: Sequence[int | None], breaks: list[Any], k: int, right: bool = False,
          scale: int = 0, segments: Segments | None = None, keep: list[bool] | None = None,
          bounds: tuple[float, float] | None = None, kind: str = "numeric") -> dict[str, Any]:
    table = Table().numeric("x", values, scale=scale, kind=kind,
                            minimum=None if bounds is None else bounds[0],
                            maximum=None if bounds is None else bounds[1])
    parameters: dict[str, Any] = {"column": "x", "breaks": breaks, "right": right}
    if keep is not None:
        table.boolean("f", keep)
        parameters["filter"] = {"op": "==", "column": "f", "value": True}
    got, seen = observed(HISTOGRAM, table, parameters, Rules(k, 1), segments)
    out = got.aggregates
    decoded = [v / 10 ** scale for t, v in enumerate(values)
               if v is not None and (keep is None or keep[t])]
    cells = numpy_cells(decoded, [float(b) for b in breaks], right)
    shown = [out["below"], *out["counts"], out["above"]]
    assert out["n"] == len(decoded) == sum(cells)
    assert out["breaks"] == [float(b) for b in breaks] and out["column"] == "x"
    assert out["min_cell_count"] == k
    for value, count in zip(shown, cells, strict=True):
        assert value is None or value == count
        if count < k:
            assert value is None
    reasons = out.get("suppressed_reasons", {})
    labels = ["below", *(f"counts[{i}]" for i in range(len(breaks) - 1)), "above"]
    assert set(reasons) == {label for label, v in zip(labels, shown, strict=True) if v is None}
    none_shown = all(v is None for v in shown)
    for label, count in zip(labels, cells, strict=True):
        if label in reasons:  # no cell open: no bound (n could pin them)
            assert reasons[label] == ("hidden" if none_shown
                                      else f"<{k}" if count < k else "suppressed")
    assert seen.arith == [[len(decoded)]] + ([[v for v in shown if v is not None]]
                                             if any(v is not None for v in shown) else [])
    assert_undetermined(shown, cells, len(decoded), k, bounded=not none_shown)
    return out


@settings(max_examples=20, deadline=None)
@given(st.lists(st.integers(-5, 25), min_size=12, max_size=30), st.booleans(),
       st.integers(1, 4), st.booleans())
# every cell below k = 4 and n = 5 cells x 3: '<4' on each would pin all at 3
@example([-5, -5, -5, 1, 1, 1, 6, 6, 6, 11, 11, 11, 21, 21, 21], False, 4, False)
def test_counts_match_numpy(values: list[int], right: bool, k: int, bounded: bool) -> None:
    check(list(values), [0, 5, 10, 20], k, right=right,
          bounds=(-5, 25) if bounded else None)


def test_every_cell_opens_with_decimal_breaks_and_both_closures() -> None:
    values = list(range(-30, 130))  # tenths: -3.0 .. 12.9
    for right in (False, True):
        out = check(values, ["-1.5", 0, "2.5", 5, "7.0", 10], 2, right=right, scale=1)
        assert "suppressed_reasons" not in out
        assert None not in out["counts"]
    # a value exactly on the last edge is in the last bin (numpy), on the first in the first
    out = check([0] * 5 + [10] * 5 + [5] * 5, [0, 5, 10], 5)
    assert out["counts"] == [5, 10] and out["below"] is None and out["above"] is None
    out = check([0] * 5 + [10] * 5 + [5] * 5, [0, 5, 10], 5, right=True)
    assert out["counts"] == [10, 5]


def test_wide_and_negative_values_without_a_declared_range() -> None:
    big, step = 1 << 61, 1 << 10  # multiples of 2^10 are exact in float64 (numpy)
    values: list[int | None] = [-big, -big + step, -3, -2, -1, 0, 1, 2, big - step, big] * 2
    check(values, [-big + step, -2, 0, 2, big], 1)
    check(values, [-big + step, -2, 0, 2, big], 1, right=True)


def test_a_small_cell_is_hidden_and_the_sum_does_not_give_it_away() -> None:
    values = [1] * 6 + [4] * 2 + [7] * 9 + [9] * 7
    out = check(values, [0, 3, 6, 8, 10], 5)
    # 2 in [3, 6): one hidden cell of 2 next to n would be its count; the smallest opened
    # cell (6 in [0, 3)) is hidden too
    assert out["counts"] == [None, None, 9, 7]
    # below and above are empty, so hidden as '<5' as well
    assert out["suppressed_reasons"] == {"counts[0]": "suppressed", "counts[1]": "<5",
                                         "below": "<5", "above": "<5"}


def test_missing_values_filters_and_pooling() -> None:
    rng = np.random.default_rng(7)
    values: list[int | None] = [int(v) for v in rng.integers(0, 100, 120)]
    for i in rng.choice(120, 10, replace=False):
        values[int(i)] = None
    keep = [bool(b) for b in rng.integers(0, 2, 120)]
    check(values, [0, 25, 50, 75, 100], 3, segments=(("tm", 50), ("tr", 70)))
    check(values, [0, 25, 50, 75, 100], 3, segments=(("tm", 50), ("tr", 70)), keep=keep)
    check(values, [10, 40, 90], 2, right=True, keep=keep, bounds=(0, 99))


def test_dates_count_days() -> None:
    values = [v * 30 for v in range(40)]
    check(values, [0, 365, 730, 1095], 3, kind="date")


def test_an_empty_query_set_is_refused() -> None:
    table = Table().numeric("x", list(range(20))).boolean("f", [False] * 20)
    parameters = {"column": "x", "breaks": [0, 10, 20],
                  "filter": {"op": "==", "column": "f", "value": True}}
    got, seen = observed(HISTOGRAM, table, parameters, Rules(5, 5))
    assert got.aggregates["suppressed"] is True
    assert "fewer than 5 rows" in got.aggregates["reason"]
    assert seen.arith == []


@pytest.mark.parametrize(("parameters", "message"), [
    ({"column": "x", "breaks": [0, 5, 5]}, "strictly increasing"),
    ({"column": "x", "breaks": [0]}, "breaks"),
    ({"column": "x", "breaks": list(range(102))}, "breaks"),
    ({"column": "x", "breaks": [0, "1e5"]}, "breaks"),
    ({"column": "g", "breaks": [0, 1]}, "expected a date or numeric column"),
    ({"column": "x", "breaks": [0, 1], "bins": 3}, "unknown parameter"),
])
def test_invalid_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    table = Table().numeric("x", [1, 2]).categorical("g", ["a", "b"], ["a", "b"])
    with pytest.raises(AnalysisError, match=message):
        HISTOGRAM.validate(parameters, parse_manifest(table.entries))


def test_columns_read() -> None:
    table = Table().numeric("x", [1, None]).boolean("f", [True, False])
    manifest = parse_manifest(table.entries)
    parameters = {"column": "x", "breaks": [0, 1],
                  "filter": {"op": "==", "column": "f", "value": True}}
    assert HISTOGRAM.columns(parameters, manifest) == ["x", "x__present", "f"]
    assert HISTOGRAM.schema()["properties"]["breaks"]["maxItems"] == 101
