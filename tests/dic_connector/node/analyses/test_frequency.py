"""frequency v1 against plaintext counts; suppressed cells are never opened."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.node.analyses.frequency import Frequency
from tests.dic_connector.node.analyses.support import Table, run, spy_openings

FREQUENCY = Frequency()
LEVELS = ["a", "b", "c", "d"]


def reference(values: list[str | None], levels: list[str], k: int) -> dict[str, Any]:
    counts = Counter(v for v in values if v is not None)
    return {"levels": {lv: counts[lv] if counts[lv] >= k else f"<{k}" for lv in levels},
            "min_cell_count": k}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([*LEVELS, None]), max_size=40), st.integers(1, 7),
       st.booleans())
def test_frequency_matches_plaintext_and_opens_only_allowed_cells(
        values: list[str | None], k: int, indicator: bool) -> None:
    if not indicator:
        values = [v for v in values if v is not None]
    table = Table().categorical("g", LEVELS, values, present=indicator)
    with pytest.MonkeyPatch.context() as mp:
        seen = spy_openings(mp)
        out = run(FREQUENCY, table, {"column": "g"}, k)
    expected = reference(values, LEVELS, k)
    assert out == expected
    counts = Counter(v for v in values if v is not None)
    assert seen.bits == [[int(counts[lv] < k) for lv in LEVELS]]
    opened = [counts[lv] for lv in LEVELS if counts[lv] >= k]
    assert seen.arith == ([opened] if opened else [])
    # numpy cross-check of the opened cells
    codes = np.array([LEVELS.index(v) for v in values if v is not None], dtype=np.int64)
    table_np = np.bincount(codes, minlength=len(LEVELS))
    assert [c for c in table_np if c >= k] == opened


def test_counts_at_k_minus_one_k_and_k_plus_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cells of 4, 5, 6 and 0 with k = 5: the 4 and the 0 are never opened."""
    values: list[str | None] = ["a"] * 4 + ["b"] * 5 + ["c"] * 6 + [None] * 3
    seen = spy_openings(monkeypatch)
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 5)
    assert out == {"levels": {"a": "<5", "b": 5, "c": 6, "d": "<5"}, "min_cell_count": 5}
    assert seen.bits == [[1, 0, 0, 1]]
    assert seen.arith == [[5, 6]]  # exactly the allowed cells, in one opening
    assert 4 not in seen.arith_values and 0 not in seen.arith_values


def test_all_suppressed_opens_no_count(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_openings(monkeypatch)
    values: list[str | None] = ["a", "b", "b", None, None, None, None, None]
    out = run(FREQUENCY, Table().categorical("g", LEVELS, values), {"column": "g"}, 3)
    assert out == {"levels": dict.fromkeys(LEVELS, "<3"), "min_cell_count": 3}
    assert seen.arith == []


@pytest.mark.parametrize("values", [[], [None, None], ["a"]])
def test_empty_and_single_row(values: list[str | None]) -> None:
    table = Table().categorical("g", LEVELS, values, present=True)
    assert run(FREQUENCY, table, {"column": "g"}, 1) == reference(values, LEVELS, 1)


def test_missing_rows_are_not_counted_even_if_one_hot_set() -> None:
    """The product with the present flag enforces the filter whatever the encoding."""
    table = Table().categorical("g", ["x", "y"], ["x"] * 6 + ["y"] * 6)
    table.entries.append({"name": "g__present", "kind": "present", "column": "g",
                          "scale": 0})
    table.values["g__present"] = np.array([1] * 6 + [1, 0, 0, 0, 0, 1], dtype=np.int64)
    out = run(FREQUENCY, table, {"column": "g"}, 2)
    assert out == {"levels": {"x": 6, "y": 2}, "min_cell_count": 2}


def test_single_level_and_columns() -> None:
    table = Table().categorical("g", ["only"], ["only"] * 5, present=True)
    assert run(FREQUENCY, table, {"column": "g"}, 5) == {"levels": {"only": 5},
                                                         "min_cell_count": 5}
    manifest = table.inputs()[0].manifest
    assert FREQUENCY.columns({"column": "g"}, manifest) == ["g=only", "g__present"]
