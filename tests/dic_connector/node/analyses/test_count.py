"""count v1 against plaintext counts, on three loopback parties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.node.analyses.count import Count
from tests.dic_connector.node.analyses.support import Table, run, spy_openings

COUNT = Count()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(-5, 5)), max_size=30), st.integers(1, 8))
def test_count_with_missing_values_matches_plaintext(values: list[int | None], k: int) -> None:
    table = Table().numeric("x", values, present=True)
    n = sum(v is not None for v in values)
    expected = {"n": n} if n >= k else {"n": f"<{k}", "suppressed": True}
    assert run(COUNT, table, {"column": "x"}, k) == expected
    everything = len(values)
    expected_all = ({"n": everything} if everything >= k
                    else {"n": f"<{k}", "suppressed": True})
    assert run(COUNT, table, {}, k) == expected_all


@pytest.mark.parametrize("n, k", [(4, 5), (5, 5), (6, 5), (0, 1), (1, 1), (0, 5)])
def test_threshold_boundaries(n: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """k - 1, k, k + 1 and the empty selection; a suppressed n is never opened."""
    values: list[int | None] = [1] * n + [None] * 7
    seen = spy_openings(monkeypatch)
    out = run(COUNT, Table().numeric("x", values), {"column": "x"}, k)
    assert seen.bits == [[int(n < k)]]  # exactly one threshold bit
    if n >= k:
        assert out == {"n": n} and seen.arith == [[n]]
    else:
        assert out == {"n": f"<{k}", "suppressed": True} and seen.arith == []


def test_column_without_indicator_counts_every_row() -> None:
    table = Table().numeric("x", [1, 2, 3, 4, 5, 6]).categorical("g", ["a", "b"], ["a"] * 6)
    assert run(COUNT, table, {"column": "x"}, 5) == {"n": 6}
    assert run(COUNT, table, {"column": "g"}, 5) == {"n": 6}
    assert COUNT.columns({"column": "x"}, table.inputs()[0].manifest) == []


def test_categorical_with_missing_counts_present_rows() -> None:
    values = ["a", None, "b", "b", None, "a", "a"]
    table = Table().categorical("g", ["a", "b"], values)
    assert run(COUNT, table, {"column": "g"}, 5) == {"n": 5}
    assert COUNT.columns({"column": "g"}, table.inputs()[0].manifest) == ["g__present"]


def test_pooled_over_segments() -> None:
    values = list(np.arange(12) % 3 - 1)
    table = Table().numeric("x", [None if v < 0 else int(v) for v in values])
    out = run(COUNT, table, {"column": "x"}, 3, segments=(("a", 5), ("b", 7)))
    assert out == {"n": 8}
