"""contingency v1 against numpy and the plaintext reference of primary and secondary suppression.

Every run checks that the three releases are equal and the transcript against the
independent spy (``support.observed``); the values opened are exactly the cells shown, and
no suppressed cell can be recovered from the opened cells and the margins (a linear
program bounds every hidden cell).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.contingency import Contingency
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.fisher import Fisher
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import Opened, Segments, Table, observed, run
from tests.dic_connector.node.analyses.test_ledger import Nodes

CONTINGENCY = Contingency()
ROWS = ["a", "b", "c"]
COLS = ["x", "y", "z"]


def crosstab(
    rows: list[str | None],
    cols: list[str | None],
    row_levels: list[str],
    col_levels: list[str],
    keep: list[bool] | None = None,
) -> np.ndarray:
    """numpy: the counts of the rows where both are present (and ``keep``)."""
    out = np.zeros((len(row_levels), len(col_levels)), dtype=np.int64)
    pairs = [
        (row_levels.index(a), col_levels.index(b))
        for t, (a, b) in enumerate(zip(rows, cols, strict=True))
        if a is not None and b is not None and (keep is None or keep[t])
    ]
    if pairs:
        np.add.at(out, tuple(np.array(pairs).T), 1)
    return out


def feasible_intervals(
    counts: np.ndarray,
    hidden: list[tuple[int, int]],
    bounds: dict[tuple[int, int], tuple[float, float | None]],
    k: int,
    exact_margins: bool = False,
) -> dict[tuple[int, int], tuple[int, int]]:
    """For each hidden cell, the smallest and largest value that some non-negative table
    allows with the other cells as opened, each hidden cell within ``bounds`` and the
    margins as a researcher can know them: exactly when >= k (a ``frequency`` over the same
    rows opens them at best), else only that they are below k (LP bounds, integers here up
    to rounding)."""
    r, c = counts.shape
    lines = [[(i, j) for j in range(c)] for i in range(r)] + [
        [(i, j) for i in range(r)] for j in range(c)
    ]
    return line_intervals(lambda cell: int(counts[cell]), lines, hidden,
                          [bounds[h] for h in hidden], k, exact_margins)


def line_intervals(value: Any, lines: list[list[Any]], hidden: list[Any],
                   bounds: list[tuple[float, float | None]], k: int,
                   exact_margins: bool = False) -> dict[Any, tuple[int, int]]:
    """:func:`feasible_intervals` for any cells and lines (``value(cell)`` its count):
    each line's sum exactly when >= k (or ``exact_margins``), else that it is below k."""
    if not hidden:
        return {}
    position = {cell: t for t, cell in enumerate(hidden)}
    a_eq, b_eq, a_ub, b_ub = [], [], [], []
    for line in lines:
        row = [0.0] * len(hidden)
        for cell in line:
            if cell in position:
                row[position[cell]] = 1.0
        rest = float(sum(value(cell) for cell in line if cell not in position))
        margin = float(sum(value(cell) for cell in line))
        if margin >= k or exact_margins:
            a_eq.append(row)
            b_eq.append(margin - rest)
        else:
            a_ub.append(row)
            b_ub.append(k - 1.0 - rest)
    return dict(zip(hidden, lp_intervals(a_eq, b_eq, a_ub, b_ub, bounds), strict=True))


def lp_intervals(a_eq: list[list[float]], b_eq: list[float], a_ub: list[list[float]],
                 b_ub: list[float], bounds: list[tuple[float, float | None]]
                 ) -> list[tuple[int, int]]:
    """For each variable, its smallest and largest value under A_eq v = b_eq, A_ub v <=
    b_ub and ``bounds`` (linear programs, rounded inwards to integers)."""
    out = []
    for t in range(len(bounds)):
        found = []
        for sign in (1.0, -1.0):
            objective = [0.0] * len(bounds)
            objective[t] = sign
            solved = linprog(
                objective,
                A_eq=a_eq or None,
                b_eq=b_eq or None,
                A_ub=a_ub or None,
                b_ub=b_ub or None,
                method="highs",
                bounds=bounds,
            )
            assert solved.status == 0
            found.append(sign * solved.fun)
        out.append((math.ceil(found[0] - 1e-6), math.floor(found[1] + 1e-6)))
    return out


def assert_protected(shown: list[list[Any]], counts: np.ndarray, k: int) -> None:
    """No hidden cell below k can be recovered from the margins and the opened cells:
    wherever the margins alone leave its value open, so do they with the opened cells (the
    margins as a researcher can know them, see :func:`feasible_intervals`). Not checked:
    bounds from the marks themselves ('<k' below k, 'suppressed' >= k), with which a
    linear program can pin a cell of some patterns (a hidden rectangle whose small cells
    are at 0 and k - 1); see the module doc of ``contingency``."""
    r, c = counts.shape
    every = [(i, j) for i in range(r) for j in range(c)]
    bounds: dict[tuple[int, int], tuple[float, float | None]] = dict.fromkeys(every, (0.0, None))
    margins_only = feasible_intervals(counts, every, bounds, k)
    hidden = [(i, j) for i, j in every if not isinstance(shown[i][j], int)]
    for cell, (low, high) in feasible_intervals(counts, hidden, bounds, k).items():
        assert low <= counts[cell] <= high
        before = margins_only[cell]
        if counts[cell] < k and before[0] < before[1]:
            assert low < high, (shown, counts.tolist(), cell, (low, high))


def check(
    rows: list[str | None],
    cols: list[str | None],
    segments: Segments,
    rules: Rules,
    row_levels: list[str] = ROWS,
    col_levels: list[str] = COLS,
    excluded_ok: bool = False,
) -> tuple[dict[str, Any], Opened]:
    table = (
        Table()
        .categorical("g", row_levels, rows, present=any(v is None for v in rows))
        .categorical("h", col_levels, cols, present=any(v is None for v in cols))
    )
    parameters: dict[str, Any] = {"row": "g", "col": "h"}
    if excluded_ok:
        parameters["disclose_excluded"] = True
    got, seen = observed(CONTINGENCY, table, parameters, rules, segments)
    expected = reference.contingency(
        rows, cols, row_levels, col_levels, None, segments, rules, excluded_ok
    )
    if expected.refusal is not None:
        assert got.aggregates["suppressed"] is True
        assert reference.reason_matches(got.aggregates["reason"], expected.refusal, segments, rules)
        assert seen.arith == []
        return got.aggregates, seen
    counts = crosstab(rows, cols, row_levels, col_levels)
    assert expected.counts == counts.tolist()
    out = got.aggregates
    assert out["cells"] == expected.cells, (counts.tolist(), rules, excluded_ok)
    opened = [v for line in out["cells"] for v in line if isinstance(v, int)]
    assert seen.arith == ([opened] if opened else [])  # exactly the shown cells, at once
    assert_protected(out["cells"], counts, rules.min_cell_count)
    for i, total in enumerate(out["row_totals"]):
        assert total == (
            int(counts[i].sum()) if all(isinstance(v, int) for v in out["cells"][i]) else None
        )
    return out, seen


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str | None], list[str | None], Segments, Rules]:
    """Cells near k (0, 1, k - 1, k, k + 1, 2k), a few missing values of either variable,
    one or two sites."""
    k = draw(st.integers(2, 5))
    r, c = draw(st.integers(2, 3)), draw(st.integers(2, 3))
    sizes = draw(
        st.lists(st.sampled_from([0, 1, k - 1, k, k + 1, 2 * k]), min_size=r * c, max_size=r * c)
    )
    pairs: list[tuple[str | None, str | None]] = [
        (ROWS[x // c], COLS[x % c]) for x, size in enumerate(sizes) for _ in range(size)
    ]
    pairs += [(None, draw(st.sampled_from(COLS[:c])))] * draw(st.sampled_from([0, 1, k]))
    pairs += [(draw(st.sampled_from(ROWS[:r])), None)] * draw(st.sampled_from([0, 1]))
    pairs = draw(st.permutations(pairs))
    split = draw(st.sampled_from([None, len(pairs) // 2]))
    segments: Segments = (
        (("site", len(pairs)),) if split is None else (("tm", split), ("tr", len(pairs) - split))
    )
    return ([a for a, _ in pairs], [b for _, b in pairs], segments, Rules(k, 1))


@settings(max_examples=20, deadline=None)
@given(tables(), st.booleans())
def test_contingency_matches_the_reference(case: tuple[Any, ...], excluded_ok: bool) -> None:
    rows, cols, segments, rules = case
    r = len({v for v in rows if v is not None} | {"a", "b"})
    c = len({v for v in cols if v is not None} | {"x", "y"})
    check(rows, cols, segments, rules, ROWS[:r], COLS[:c], excluded_ok)


def test_a_full_table_opens_every_cell_once() -> None:
    rows = ["a"] * 12 + ["b"] * 14
    cols = ["x"] * 5 + ["y"] * 7 + ["x"] * 8 + ["y"] * 6
    out, seen = check(rows, cols, (("site", 26),), Rules.of(5), ["a", "b"], ["x", "y"])
    assert out == {
        "rows": {"variable": "g", "levels": ["a", "b"]},
        "columns": {"variable": "h", "levels": ["x", "y"]},
        "cells": [[5, 7], [8, 6]],
        "row_totals": [12, 14],
        "column_totals": [13, 13],
        "total": 26,
        "min_cell_count": 5,
    }
    assert seen.arith == [[5, 7, 8, 6]]
    assert seen.bits == [[0, 0, 0, 0], [0]]  # cells >= k; rows not in an opened cell 0 or >= k


def test_one_small_cell_hides_a_rectangle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2 x 3 table with one cell of 2 (k = 5): its row and its column each hide their
    smallest other cell, and the cell where those meet closes the rectangle; the 2 is never
    opened and cannot be bounded."""
    cells = {
        ("a", "x"): 2,
        ("a", "y"): 9,
        ("a", "z"): 6,
        ("b", "x"): 7,
        ("b", "y"): 8,
        ("b", "z"): 10,
    }
    rows = [a for (a, _), n in cells.items() for _ in range(n)]
    cols = [b for (_, b), n in cells.items() for _ in range(n)]
    out, seen = check(rows, cols, (("site", len(rows)),), Rules.of(5), ["a", "b"], COLS)
    assert out["cells"] == [["<5", 9, "suppressed"], ["suppressed", 8, "suppressed"]]
    hidden = {(i, j) for i in range(2) for j in range(3) if not isinstance(out["cells"][i][j], int)}
    assert (0, 0) in hidden and (1, 0) in hidden and len(hidden) == 4
    assert 2 not in seen.arith_values


def test_secondary_suppression_of_the_pilot_like_table() -> None:
    """Local control (CR, PR, SD, PD) by sex, PD = 4 in all: PD's column hides both cells,
    and each of their rows one more, so no small count follows from the margins."""
    lc = ["CR"] * 10 + ["PR"] * 13 + ["SD"] * 19 + ["PD"] * 4
    sex = (
        ["m"] * 6
        + ["f"] * 4
        + ["m"] * 8
        + ["f"] * 5
        + ["m"] * 12
        + ["f"] * 7
        + ["m", "m", "f", "f"]
    )
    out, _ = check(sex, lc, (("site", len(lc)),), Rules.of(3), ["m", "f"], ["CR", "PR", "SD", "PD"])
    assert out["cells"][0][3] == "<3" and out["cells"][1][3] == "<3"
    assert sum(not isinstance(v, int) for v in out["cells"][0]) >= 2


@pytest.mark.parametrize(
    "rows, cols, k", [([], [], 1), ([None, None], ["x", "y"], 1), (["a", "b"], [None, "x"], 2)]
)
def test_an_empty_query_set_is_refused(
    rows: list[str | None], cols: list[str | None], k: int
) -> None:
    table = (
        Table()
        .categorical("g", ["a", "b"], rows, present=True)
        .categorical("h", ["x", "y"], cols, present=True)
    )
    got, seen = observed(CONTINGENCY, table, {"row": "g", "col": "h"}, Rules.of(k))
    assert got.aggregates == {
        "suppressed": True,
        "reason": f"site(s) 'site' contribute fewer "
        f"than {k} rows (min_subset_size) to the query set",
    }
    assert seen.arith == []


def test_a_site_below_min_subset_size_is_named() -> None:
    rows = ["a", "b"] * 6
    cols = ["x"] * 6 + ["y"] * 6
    out, _ = check(rows, cols, (("tm", 10), ("tr", 2)), Rules.of(3), ["a", "b"], ["x", "y"])
    assert "'tr'" in out["reason"] and "min_subset_size" in out["reason"]


def filtered_case(seed: int) -> tuple[Table, list[str | None], list[bool], list[int | None]]:
    rng = np.random.default_rng(seed)
    n = 40
    stage = [["I", "II", "III"][v] for v in rng.integers(0, 3, n)]
    dead = [bool(v) for v in rng.integers(0, 2, n)]
    age = [int(v) for v in rng.integers(20, 90, n)]
    age_missing: list[int | None] = [None if t % 9 == 0 else v for t, v in enumerate(age)]
    stage_missing: list[str | None] = [None if t % 7 == 3 else v for t, v in enumerate(stage)]
    table = (
        Table()
        .categorical("stage", ["I", "II", "III"], stage_missing)
        .boolean("dead", dead)
        .numeric("age", age_missing, minimum=0, maximum=120)
    )
    return table, stage_missing, dead, age_missing


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_filters_and_derived_binaries_match_numpy(seed: int) -> None:
    """stage x (age >= 60) over the rows where dead is true: the derived binary is present
    where age is; the filter's complements per cell are checked (k = 2)."""
    table, stage, dead, age = filtered_case(seed)
    parameters = {
        "row": "stage",
        "col": {"filter": {"op": ">=", "column": "age", "value": 60}, "labels": [">= 60", "< 60"]},
        "filter": {"op": "==", "column": "dead", "value": True},
        "disclose_excluded": True,
    }
    rules = Rules(2, 1)
    got, seen = observed(CONTINGENCY, table, parameters, rules)
    old = [None if a is None else (">= 60" if a >= 60 else "< 60") for a in age]
    expected = reference.contingency(
        stage,
        old,
        ["I", "II", "III"],
        [">= 60", "< 60"],
        dead,
        (("site", 40),),
        rules,
        excluded_ok=True,
    )
    assert got.aggregates["cells"] == expected.cells
    assert (
        expected.counts
        == crosstab(stage, old, ["I", "II", "III"], [">= 60", "< 60"], dead).tolist()
    )
    assert got.aggregates["columns"] == {
        "variable": {"column": "age", "op": ">=", "value": 60},
        "levels": [">= 60", "< 60"],
    }
    names = [o.name for o in got.transcript]
    assert names[1:3] == ["cell counts >= 2", "rows of each cell that fail the filter: 0 or >= 2"]
    opened = [v for line in got.aggregates["cells"] for v in line if isinstance(v, int)]
    assert seen.arith_values == opened


def test_excluded_rows_below_k_need_the_owners_consent() -> None:
    """All four cells >= k, but 2 rows lack the row variable: N - total would give 2 away;
    with disclose_excluded the table opens, and only an explicit policy scope covers it."""
    rows: list[str | None] = ["a"] * 10 + ["b"] * 10 + [None, None]
    cols = ["x", "y"] * 11
    strict, _ = check(rows, cols, (("site", 22),), Rules.of(5), ["a", "b"], ["x", "y"])
    assert sum(isinstance(v, int) for line in strict["cells"] for v in line) == 0
    allowed, _ = check(
        rows, cols, (("site", 22),), Rules.of(5), ["a", "b"], ["x", "y"], excluded_ok=True
    )
    assert allowed["cells"] == [[5, 5], [5, 5]] and allowed["total"] == 20
    assert CONTINGENCY.policy_scope({"row": "g", "col": "h"}) == "contingency"
    assert CONTINGENCY.policy_scope({"row": "g", "col": "h", "disclose_excluded": True}) == (
        "contingency:excluded"
    )


def test_booleans_and_columns_read() -> None:
    table = (
        Table()
        .boolean("smoker", [True, False] * 10 + [None])
        .categorical("g", ["a", "b"], ["a"] * 11 + ["b"] * 10)
    )
    out = run(
        CONTINGENCY, table, {"row": "smoker", "col": "g", "disclose_excluded": True}, Rules(2, 1)
    )
    assert out["rows"] == {"variable": "smoker", "levels": ["false", "true"]}
    assert out["cells"] == [[5, 5], [6, 4]]  # smoker false, true by g = a, b
    manifest = table.inputs()[0].manifest
    assert CONTINGENCY.columns({"row": "smoker", "col": "g"}, manifest) == [
        "smoker",
        "smoker__present",
        "g=a",
        "g=b",
    ]
    assert CONTINGENCY.columns(
        {"row": "smoker", "col": {"filter": {"op": "is_present", "column": "g"}}}
    ) == ["smoker", "g"]
    assert CONTINGENCY.typed_columns({"row": "smoker", "col": "g"}, manifest) == ["g", "smoker"]


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"row": "age", "col": "g"}, r"'row': 'age' is numeric; expected a categorical or boolean"),
        ({"row": "g", "col": "g"}, "name the same variable 'g'"),
        ({"row": "weight", "col": "g"}, r"'row': unknown column 'weight'"),
        ({"row": "g"}, "'col' is a required property"),
        (
            {
                "row": "g",
                "col": {"filter": {"op": "<", "column": "age", "value": 80}, "labels": ["low"]},
            },
            "labels",
        ),
        ({"row": "g", "col": {"filter": {"op": "~", "column": "age"}}}, r"'col': filter"),
        (
            {"row": "g", "col": {"filter": {"op": "<", "column": "age", "value": "x"}}},
            r"'col': filter.value",
        ),
        ({"row": "g", "col": "age", "by": "g"}, "unknown parameter"),
    ],
)
def test_invalid_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    table = Table().categorical("g", ["a", "b"], ["a", "b"]).numeric("age", [50, 60])
    with pytest.raises(AnalysisError, match=message):
        CONTINGENCY.validate(parameters, table.inputs()[0].manifest)


def pairs_table(cells: dict[tuple[str, str], int]) -> Table:
    rows = [a for (a, _), n in cells.items() for _ in range(n)]
    cols = [b for (_, b), n in cells.items() for _ in range(n)]
    return Table().categorical("g", ["a", "b"], rows).categorical("h", ["x", "y"], cols)


def test_pooled_minus_per_site_cannot_recover_a_small_cell() -> None:
    """The release ledger (``test_ledger.Nodes``): a pooled table, then tm's alone, would
    give tr's cells (2, 3, 2, 3) by subtraction; the per-site table hides them, and a
    fisher on tm alone is refused."""
    tm = {("a", "x"): 10, ("a", "y"): 5, ("b", "x"): 8, ("b", "y"): 7}
    tr = {("a", "x"): 2, ("a", "y"): 3, ("b", "x"): 2, ("b", "y"): 3}
    both = pairs_table(tm)
    tr_table = pairs_table(tr)
    for name, values in tr_table.values.items():
        both.values[name] = np.concatenate([both.values[name], values])
    nodes = Nodes()
    pooled = nodes.run(CONTINGENCY, both, {"row": "g", "col": "h"}, (("tm", 30), ("tr", 10)))
    assert pooled["cells"] == [[12, 8], [10, 10]]
    alone = nodes.run(CONTINGENCY, pairs_table(tm), {"row": "g", "col": "h"}, (("tm", 30),))
    assert alone["cells"] == [["suppressed"] * 2] * 2
    test = nodes.run(Fisher(), pairs_table(tm), {"row": "g", "col": "h"}, (("tm", 30),))
    assert test["suppressed"] is True and "release ledger" in test["reason"]
    fresh = Nodes()  # without the ledger, tm's table opens and gives tr's cells away
    assert fresh.run(CONTINGENCY, pairs_table(tm), {"row": "g", "col": "h"}, (("tm", 30),))[
        "cells"
    ] == [[10, 5], [8, 7]]
