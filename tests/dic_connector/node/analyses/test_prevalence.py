"""prevalence v1 against numpy and statsmodels, with primary and secondary suppression.

Every run checks that the three releases are equal and the transcript against the
independent spy (``support.observed``); the values opened are exactly the denominators and
numerators shown; no hidden count in 1..k-1 (denominator, numerator or non-cases) of a
two- or three-way table is determined by the opened cells and the margins (a linear
program bounds every hidden cell, as for ``contingency``, given every line sum, i.e. every
margin of one column fewer, as a researcher can know it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.proportion import proportion_confint

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.manifest import parse_manifest
from dic_connector.node.analyses.prevalence import Prevalence, line_cells, wilson
from tests.dic_connector.node.analyses.support import Segments, Table, observed
from tests.dic_connector.node.analyses.test_contingency import feasible_intervals, line_intervals
from tests.dic_connector.node.analyses.test_ledger import Nodes

PREVALENCE = Prevalence()
LEVELS = {"zip": ["z1", "z2", "z3"], "sex": ["f", "m"], "age": ["young", "old"]}


def reference(by: Sequence[Sequence[str | None]], case: Sequence[bool | None],
              levels: Sequence[Sequence[str]], keep: Sequence[bool] | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """numpy: denominators and numerators per cell (rows with every by present, the case
    present, and ``keep``)."""
    shape = tuple(len(v) for v in levels)
    den, num = np.zeros(shape, dtype=np.int64), np.zeros(shape, dtype=np.int64)
    for t in range(len(case)):
        values = [column[t] for column in by]
        if any(v is None for v in values) or case[t] is None or (keep and not keep[t]):
            continue
        at = tuple(lv.index(v) for lv, v in zip(levels, values, strict=True))
        den[at] += 1
        num[at] += int(bool(case[t]))
    return den, num


def assert_protected(shown: np.ndarray, counts: np.ndarray, k: int) -> None:
    """No hidden count in 1..k-1 of a 2-D table is pinned by the opened cells and the
    margins where the margins alone leave it open (zeros may be: an empty cell)."""
    r, c = counts.shape
    every = [(i, j) for i in range(r) for j in range(c)]
    bounds: dict[tuple[int, int], tuple[float, float | None]] = dict.fromkeys(every, (0.0, None))
    margins_only = feasible_intervals(counts, every, bounds, k)
    hidden = [cell for cell in every if shown[cell] < 0]
    for cell, (low, high) in feasible_intervals(counts, hidden, bounds, k).items():
        assert low <= counts[cell] <= high
        before = margins_only[cell]
        if 1 <= counts[cell] < k and before[0] < before[1]:
            assert low < high, (shown.tolist(), counts.tolist(), cell, (low, high))


def flat_intervals(counts: np.ndarray, hidden: Sequence[int], k: int
                   ) -> dict[int, tuple[int, int]]:
    """For each hidden cell (a flat index) of a table of any number of columns, the
    smallest and largest value some non-negative table allows with the other cells as
    opened and every line sum (:func:`line_cells`: the margins of one column fewer, which
    this recipe or ``contingency`` over fewer columns opens at best) as a researcher can
    know it: exactly when >= k, else only that it is below k."""
    flat = counts.ravel()
    return line_intervals(lambda cell: int(flat[cell]),
                          [line for _, line in line_cells(counts.shape)], list(hidden),
                          [(0.0, None)] * len(hidden), k)


def assert_lines_protect(shown: np.ndarray, counts: np.ndarray, k: int) -> None:
    """:func:`assert_protected` for a table of any number of columns, by
    :func:`flat_intervals`."""
    every = list(range(counts.size))
    margins_only = flat_intervals(counts, every, k)
    hidden = [cell for cell in every if shown.ravel()[cell] < 0]
    flat = counts.ravel()
    for cell, (low, high) in flat_intervals(counts, hidden, k).items():
        assert low <= flat[cell] <= high
        before = margins_only[cell]
        if 1 <= flat[cell] < k and before[0] < before[1]:
            at = np.unravel_index(cell, counts.shape)
            assert low < high, (shown.tolist(), counts.tolist(), at, (low, high))


def check(by: dict[str, list[str | None]], case: list[bool | None], k: int,
          segments: Segments | None = None, keep: list[bool] | None = None,
          numerator_filter: bool = False) -> dict[str, Any]:
    table = Table()
    for name, values in by.items():
        table.categorical(name, LEVELS[name], values)
    parameters: dict[str, Any] = {"by": list(by)}
    if numerator_filter:  # the same cases, as a filter on a categorical
        table.categorical("dx", ["e11", "other"],
                          [None if v is None else ("e11" if v else "other") for v in case])
        parameters["numerator"] = {"op": "==", "column": "dx", "value": "e11"}
        # a filter's missing values are non-cases, in the population
        case = [bool(v) for v in case]
    else:
        table.boolean("dm", case)
        parameters["numerator"] = "dm"
    if keep is not None:
        table.boolean("f", keep)
        parameters["filter"] = {"op": "==", "column": "f", "value": True}
    got, seen = observed(PREVALENCE, table, parameters, Rules(k, 1), segments)
    out = got.aggregates
    levels = [LEVELS[name] for name in by]
    den, num = reference(list(by.values()), case, levels, keep)
    if out.get("suppressed"):
        assert den.sum() < k, out
        assert seen.arith == []
        return out
    assert out["by"] == list(by) and out["min_cell_count"] == k
    cells = out["cells"]
    assert len(cells) == den.size
    shown = np.full(den.shape, -1, dtype=np.int64)
    opened_den, opened_num = [], []
    for flat, cell in enumerate(cells):
        at = np.unravel_index(flat, den.shape)
        assert cell["levels"] == [lv[i] for lv, i in zip(levels, at, strict=True)]
        d, x = int(den[at]), int(num[at])
        small = d < k or 1 <= x < k or 1 <= d - x < k
        if cell["denominator"] is None:
            assert cell == {"levels": cell["levels"], "denominator": None, "numerator": None,
                            "proportion": None, "ci": None}
            continue
        assert not small and (cell["denominator"], cell["numerator"]) == (d, x)
        assert cell["proportion"] == pytest.approx(x / d)
        low, high = proportion_confint(x, d, alpha=0.05, method="wilson")
        assert cell["ci"] == pytest.approx([low, high], abs=1e-12)
        shown[at] = d
        opened_den.append(d)
        opened_num.append(x)
    assert seen.arith == ([opened_den, opened_num] if opened_den else [])
    for counts in (den, num, den - num):
        if den.ndim == 2:
            assert_protected(shown, counts, k)
        assert_lines_protect(shown, counts, k)
    return out


@st.composite
def tables(draw: st.DrawFn) -> tuple[dict[str, list[str | None]], list[bool | None], int,
                                     Segments]:
    """Two-way tables whose cells hold 0, 1, k - 1, k or 2k rows, of which 0, 1, k - 1 or
    all are cases, a few missing values; one or two sites."""
    k = draw(st.integers(2, 4))
    rows: list[tuple[str | None, str | None, bool | None]] = []
    for z in LEVELS["zip"]:
        for s in LEVELS["sex"]:
            size = draw(st.sampled_from([0, 1, k - 1, k, 2 * k]))
            cases = min(size, draw(st.sampled_from([0, 1, k - 1, size])))
            rows += [(z, s, True)] * cases + [(z, s, False)] * (size - cases)
    rows += [(None, "f", True)] * draw(st.sampled_from([0, 1]))
    rows += [("z1", "m", None)] * draw(st.sampled_from([0, 1]))
    rows = draw(st.permutations(rows))
    split = draw(st.sampled_from([None, len(rows) // 2]))
    segments: Segments = ((("site", len(rows)),) if split is None
                          else (("tm", split), ("tr", len(rows) - split)))
    by = {"zip": [r[0] for r in rows], "sex": [r[1] for r in rows]}
    return by, [r[2] for r in rows], k, segments


@settings(max_examples=12, deadline=None)
@given(tables())
def test_two_way_prevalence_matches_numpy_and_protects(case: tuple[Any, ...]) -> None:
    by, cases, k, segments = case
    check(by, cases, k, segments)


@st.composite
def three_way_tables(draw: st.DrawFn) -> tuple[dict[str, list[str | None]],
                                               list[bool | None], int]:
    """zip x sex x age (3 x 2 x 2) tables whose cells hold 0, 1, k - 1, k or 2k rows, of
    which 0, 1, k - 1 or all are cases: the PHAME shape, small enough for the LP audit."""
    k = draw(st.integers(2, 4))
    rows: list[tuple[str, str, str, bool]] = []
    for z in LEVELS["zip"]:
        for s in LEVELS["sex"]:
            for a in LEVELS["age"]:
                size = draw(st.sampled_from([0, 1, k - 1, k, 2 * k]))
                cases = min(size, draw(st.sampled_from([0, 1, k - 1, size])))
                rows += [(z, s, a, True)] * cases + [(z, s, a, False)] * (size - cases)
    rows = draw(st.permutations(rows))
    by: dict[str, list[str | None]] = {
        name: [r[i] for r in rows] for i, name in enumerate(("zip", "sex", "age"))}
    return by, [r[3] for r in rows], k


@settings(max_examples=15, deadline=None)
@given(three_way_tables())
def test_three_way_prevalence_protects_by_linear_programming(case: tuple[Any, ...]) -> None:
    """The line-wise secondary suppression of a three-way table, audited by linear
    programming over all its lines (the two-way margins) for d, x and d - x."""
    by, cases, k = case
    check(by, cases, k)


def test_three_columns_pooled_with_a_filter() -> None:
    rng = np.random.default_rng(3)
    n = 400
    by: dict[str, list[str | None]] = {
        name: [levels[int(i)] for i in rng.integers(0, len(levels), n)]
        for name, levels in LEVELS.items()}
    by["age"][5] = None
    case: list[bool | None] = [bool(v) for v in rng.random(n) < 0.3]
    keep = [bool(v) for v in rng.random(n) < 0.8]
    check(by, case, 3, segments=(("tm", 150), ("tr", 250)))
    check(by, case, 3, segments=(("tm", 150), ("tr", 250)), keep=keep)
    out = check(by, case, 1)  # k = 1: every non-empty cell opens
    den, _ = reference(list(by.values()), case, list(LEVELS.values()))
    assert sum(c["denominator"] is not None for c in out["cells"]) == int((den > 0).sum())


def test_a_filter_as_numerator_and_no_by_column() -> None:
    case: list[bool | None] = [True] * 7 + [False] * 20 + [None] * 3
    zips: list[str | None] = ["z1"] * 30
    out = check({"zip": zips}, case, 5, numerator_filter=True)
    assert out["cells"][0]["numerator"] == 7 and out["cells"][0]["denominator"] == 30
    table = Table().boolean("dm", case)
    got, _ = observed(PREVALENCE, table, {"numerator": "dm"}, Rules(5, 1))
    # the 3 rows of unknown status are outside the population: 27 would leave 3 < 5
    # rows not in an opened cell, so the one cell is hidden
    assert got.aggregates["cells"] == [{"levels": [], "denominator": None, "numerator": None,
                                        "proportion": None, "ci": None}]
    got, _ = observed(PREVALENCE, table, {"numerator": "dm"}, Rules(3, 1))
    assert got.aggregates["cells"][0]["denominator"] == 27


def test_small_numerators_and_complements_are_hidden_with_their_line() -> None:
    # z1: 10 rows, 2 cases (small numerator); z2: 10 rows, 9 cases (1 non-case);
    # z3: 10 rows, 5 cases: the line (the whole table) must not give z1 or z2 away
    zips = ["z1"] * 10 + ["z2"] * 10 + ["z3"] * 10
    case = [True] * 2 + [False] * 8 + [True] * 9 + [False] + [True] * 5 + [False] * 5
    out = check({"zip": list(zips)}, list(case), 3)
    assert [c["denominator"] for c in out["cells"]] == [None, None, 10]
    case = [True] * 2 + [False] * 8 + [True] * 5 + [False] * 5 + [True] * 5 + [False] * 5
    out = check({"zip": list(zips)}, list(case), 3)
    # one hidden cell alone is its margin minus the rest: one more is hidden
    assert sum(c["denominator"] is None for c in out["cells"]) == 2


def test_an_empty_population_is_refused() -> None:
    table = Table().categorical("zip", ["z1"], ["z1"] * 10).boolean("dm", [True] * 10)
    table.boolean("f", [False] * 10)
    parameters = {"numerator": "dm", "by": ["zip"],
                  "filter": {"op": "==", "column": "f", "value": True}}
    got, seen = observed(PREVALENCE, table, parameters, Rules(5, 5))
    assert got.aggregates["suppressed"] is True
    assert "fewer than 5 rows" in got.aggregates["reason"]
    assert seen.arith == []


def test_wilson_matches_statsmodels() -> None:
    for x, n in [(0, 5), (1, 10), (7, 30), (30, 30), (123, 4567)]:
        assert wilson(x, n) == pytest.approx(proportion_confint(x, n, method="wilson"),
                                             abs=1e-12)


def test_lines() -> None:
    assert line_cells([2, 3]) == [
        ("axis 0", [0, 3]), ("axis 0", [1, 4]), ("axis 0", [2, 5]),
        ("axis 1", [0, 1, 2]), ("axis 1", [3, 4, 5])]
    assert len(line_cells([100, 2, 10])) == 20 + 1000 + 200


@pytest.mark.parametrize(("parameters", "message"), [
    ({"numerator": "zip"}, "expected a boolean column or a filter"),
    ({"numerator": "nope"}, "unknown column 'nope'"),
    ({"numerator": "dm", "by": ["x"]}, "expected a categorical or boolean"),
    ({"numerator": "dm", "by": ["zip", "zip"]}, "non-unique"),
    ({"numerator": "dm", "by": ["zip", "sex", "dm", "x"]}, "too long"),
    ({"numerator": "dm", "by": ["dm"]}, "cannot be a 'by' column"),
    ({"numerator": {"op": "==", "column": "zip", "value": "z9"}}, "not a level"),
    ({"by": ["zip"]}, "'numerator' is a required property"),
])
def test_invalid_parameters_are_refused(parameters: dict[str, Any], message: str) -> None:
    table = (Table().categorical("zip", ["z1", "z2"], ["z1", "z2"])
             .categorical("sex", ["f", "m"], ["f", "m"]).boolean("dm", [True, False])
             .numeric("x", [1, 2]))
    with pytest.raises(AnalysisError, match=message):
        PREVALENCE.validate(parameters, parse_manifest(table.entries))


def test_columns_read_are_codes_not_one_hots() -> None:
    table = (Table().categorical("zip", ["z1", "z2"], ["z1", None])
             .boolean("dm", [True, None]).numeric("x", [1, 2]))
    manifest = parse_manifest(table.entries)
    parameters = {"numerator": "dm", "by": ["zip"],
                  "filter": {"op": ">", "column": "x", "value": 1}}
    assert PREVALENCE.columns(parameters, manifest) == [
        "zip", "zip__present", "dm", "dm__present", "x"]
    assert PREVALENCE.typed_columns(parameters, manifest) == ["dm", "x", "zip"]
    assert PREVALENCE.columns(parameters) == ["zip", "dm", "x"]


def test_pooled_minus_per_site_cannot_recover_a_small_numerator() -> None:
    """The release ledger (``test_ledger.Nodes``, k = 5): prevalence pooled over tm and
    tr, then over tm alone, would give tr's 2 cases by subtraction (its denominator, 10,
    and its non-cases, 8, are >= k, so only the numerator's ledger check hides it)."""
    tm_case = [True] * 10 + [False] * 10
    tr_case = [True] * 2 + [False] * 8
    both = Table().categorical("zip", ["z1"], ["z1"] * 30).boolean("dm", tm_case + tr_case)
    tm = Table().categorical("zip", ["z1"], ["z1"] * 20).boolean("dm", tm_case)
    parameters = {"numerator": "dm", "by": ["zip"]}
    nodes = Nodes()
    pooled = nodes.run(PREVALENCE, both, parameters, (("tm", 20), ("tr", 10)))
    assert (pooled["cells"][0]["denominator"], pooled["cells"][0]["numerator"]) == (30, 12)
    alone = nodes.run(PREVALENCE, tm, parameters, (("tm", 20),))
    assert alone["cells"][0]["numerator"] is None
    fresh = Nodes()  # without the ledger, tm's cell opens and gives tr's cases away
    assert fresh.run(PREVALENCE, tm, parameters, (("tm", 20),))["cells"][0]["numerator"] == 10


def test_a_boolean_by_column_and_missing_values() -> None:
    # 5 rows of unknown smoking status: fewer would follow from N minus the opened cells
    smoker: list[bool | None] = [True] * 12 + [False] * 14 + [None] * 5
    case: list[bool | None] = [*([True] * 6), *([False] * 6), *([True] * 5), *([False] * 9)]
    case.extend([True, False, True, False, True])
    zips: list[str | None] = [("z1", "z2")[i % 2] for i in range(31)]
    table = (Table().boolean("smoker", smoker).categorical("zip", ["z1", "z2"], zips)
             .boolean("dm", case))
    got, seen = observed(PREVALENCE, table, {"numerator": "dm", "by": ["smoker"]},
                         Rules(5, 1))
    cells = got.aggregates["cells"]
    assert [c["levels"] for c in cells] == [["false"], ["true"]]
    assert [(c["denominator"], c["numerator"]) for c in cells] == [(14, 5), (12, 6)]
    assert seen.arith == [[14, 12], [5, 6]]
    got, _ = observed(PREVALENCE, table, {"numerator": "dm", "by": ["smoker", "zip"]},
                      Rules(3, 1))
    as_levels = [None if v is None else ("true" if v else "false") for v in smoker]
    den, num = reference([as_levels, zips], case,
                         [["false", "true"], ["z1", "z2"]])
    for flat, cell in enumerate(got.aggregates["cells"]):
        at = np.unravel_index(flat, den.shape)
        if cell["denominator"] is not None:
            assert (cell["denominator"], cell["numerator"]) == (den[at], num[at])
