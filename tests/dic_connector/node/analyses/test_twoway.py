"""The line check of secondary suppression against brute force, and the variables of a
table (the tables themselves: ``test_contingency``)."""

from __future__ import annotations

import itertools

import pytest

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import public_share
from dic_connector.node.analyses.twoway import line_check, variable
from tests.dic_connector.node.analyses.support import Table


def feasible(k: int, small: int, large: int, mass: int) -> list[set[int]]:
    """Per hidden cell, the values it can take given the sum ``mass`` of a line's hidden
    cells, ``small`` of them in [0, k - 1] ('<k') and ``large`` in [k, mass]."""
    ranges = [range(k)] * small + [range(k, mass + 1)] * large
    out: list[set[int]] = [set() for _ in ranges]
    for values in itertools.product(*ranges):
        if sum(values) == mass:
            for i, v in enumerate(values):
                out[i].add(v)
    return out


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("small, large", [(1, 0), (2, 0), (3, 0), (0, 2), (1, 1), (2, 1), (1, 2)])
def test_a_line_passes_exactly_when_its_hidden_cells_stay_open(
    k: int, small: int, large: int
) -> None:
    """A line with opened cells (the researcher knows M, its margin minus them) passes iff
    M is not a count of 1..k-1 rows, and every hidden cell keeps two values, and each small
    cell can be 0 (else it is a small count that exists)."""
    for mass in range(0, (small + large + 2) * k):
        cells = feasible(k, small, large, mass)
        if not all(cells):
            continue  # no table has this sum
        share = public_share(0, [mass])
        check = line_check(k, small + large, large, True, share, share)
        passes = check is not None and check.holds([mass >= t for _, t in check.values])
        stays_open = (
            not 1 <= mass <= k - 1
            and all(len(c) >= 2 for c in cells)
            and all(0 in c for c in cells[:small])
        )
        assert passes == stays_open, (k, small, large, mass)


def test_a_line_without_opened_cells_needs_a_known_margin_to_leak() -> None:
    """Its margin is known only when >= k: 3 cells below 5 summing to 13 > (3 - 1) 4 would
    each be >= 1, but a margin of 4 (< k) is not known at all."""
    mass = public_share(0, [13])
    check = line_check(5, 3, 0, False, mass, mass)
    assert check is not None and not check.holds([t <= 13 for _, t in check.values])
    small = public_share(0, [4])
    check = line_check(5, 3, 0, False, small, small)
    assert check is not None and check.holds([t <= 4 for _, t in check.values])


def test_variables_of_columns_and_filters() -> None:
    table = (
        Table()
        .categorical("g", ["a", "b"], ["a", None])
        .numeric("age", [50, None])
        .boolean("flag", [True, False])
    )
    manifest = table.inputs()[0].manifest
    g = variable("t", "row", "g", manifest)
    assert (g.levels, g.flags, g.columns) == (
        ("a", "b"),
        ("g__present",),
        ("g=a", "g=b", "g__present"),
    )
    old = variable("t", "col", {"filter": {"op": ">=", "column": "age", "value": 60}}, manifest)
    assert old.levels == ("yes", "no") and old.flags == ("age__present",)
    assert old.typed == ("age",) and old.name.startswith("[{")
    assert variable("t", "row", "flag", manifest).levels == ("false", "true")
    with pytest.raises(AnalysisError, match="'row': 'age' is numeric"):
        variable("t", "row", "age", manifest)
