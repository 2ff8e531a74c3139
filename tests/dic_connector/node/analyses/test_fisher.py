"""fisher v1 and chi_square v1 against scipy, the refusals, and the pilot's Fisher p = 0.0266.

The table is counted under MPC and opened only when every cell may open; every run checks
the three releases are equal and the transcript against the independent spy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import chi2_contingency, fisher_exact

from dic_connector.dev.synthetic.pilot import pilot_resources
from dic_connector.encoding.encode import encode_table
from dic_connector.encoding.validate import validate_rows
from dic_connector.errors import AnalysisError
from dic_connector.mapping.assemble import build_cohort
from dic_connector.mapping.cohort import load_mapping
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.fisher import ChiSquare, Fisher
from tests.dic_connector.node.analyses.support import Segments, Table, observed

FISHER = Fisher()
CHI_SQUARE = ChiSquare()
MAPPING = Path(__file__).resolve().parents[4] / "mappings" / "pilot_adrenal.yaml"
#: CR by BED10 < 80 vs >= 80 Gy (PILOT.md: 5 of 36 and 5 of 10, p = 0.027).
PILOT_TABLE = {
    "row": {
        "filter": {"op": "<", "column": "bed10", "value": 80},
        "labels": ["BED10 < 80 Gy", "BED10 >= 80 Gy"],
    },
    "col": {
        "filter": {"op": "==", "column": "local_control", "value": "CR"},
        "labels": ["CR", "no CR"],
    },
}


def table_of(
    cells: np.ndarray, levels: tuple[list[str], list[str]], missing: int = 0
) -> tuple[Table, list[str | None], list[str | None]]:
    """Rows with the given cell counts (and ``missing`` rows lacking the row variable)."""
    rows: list[str | None] = []
    cols: list[str | None] = []
    for (i, j), n in np.ndenumerate(cells):
        rows += [levels[0][i]] * int(n)
        cols += [levels[1][j]] * int(n)
    rows += [None] * missing
    cols += [levels[1][0]] * missing
    table = (
        Table()
        .categorical("g", levels[0], rows, present=missing > 0)
        .categorical("h", levels[1], cols, present=False)
    )
    return table, rows, cols


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alternative", ["two-sided", "less", "greater"])
def test_fisher_matches_scipy(seed: int, alternative: str) -> None:
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 6))
    cells = rng.integers(k, 20, size=(2, 2))
    table, _, _ = table_of(cells, (["a", "b"], ["x", "y"]))
    parameters: dict[str, Any] = {"row": "g", "col": "h", "alternative": alternative}
    got, seen = observed(
        FISHER,
        table,
        parameters,
        Rules.of(k),
        (("tm", int(cells[0].sum())), ("tr", int(cells[1].sum()))),
    )
    expected = fisher_exact(cells, alternative=alternative)
    out = got.aggregates
    assert out["table"]["cells"] == cells.tolist()
    assert out["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert out["odds_ratio"] == pytest.approx(float(expected.statistic), rel=1e-12)
    assert out["alternative"] == alternative and out["test"] == "fisher_exact"
    assert seen.arith == [cells.ravel().tolist()]  # the four cells, in one opening


@pytest.mark.parametrize("shape", [(2, 2), (2, 3), (3, 4)])
@pytest.mark.parametrize("correction", [False, True])
def test_chi_square_matches_scipy(shape: tuple[int, int], correction: bool) -> None:
    rng = np.random.default_rng(sum(shape) + correction)
    cells = rng.integers(5, 30, size=shape)
    levels = (list("abcd")[: shape[0]], list("wxyz")[: shape[1]])
    table, _, _ = table_of(cells, levels)
    parameters = {"row": "g", "col": "h", "correction": correction}
    got, _ = observed(CHI_SQUARE, table, parameters, Rules.of(5))
    expected = chi2_contingency(cells, correction=correction)
    out = got.aggregates
    assert out["table"]["cells"] == cells.tolist()
    assert out["statistic"] == pytest.approx(float(expected.statistic), rel=1e-12)
    assert out["p_value"] == pytest.approx(float(expected.pvalue), rel=1e-12)
    assert out["dof"] == (shape[0] - 1) * (shape[1] - 1)
    assert np.allclose(out["expected"], expected.expected_freq)
    assert out["correction"] is correction


@pytest.mark.parametrize("analysis", [FISHER, CHI_SQUARE], ids=lambda a: a.name)
def test_a_small_cell_refuses_the_test_and_opens_no_count(analysis: Fisher | ChiSquare) -> None:
    cells = np.array([[3, 12], [9, 8]])
    table, _, _ = table_of(cells, (["a", "b"], ["x", "y"]))
    got, seen = observed(analysis, table, {"row": "g", "col": "h"}, Rules.of(5))
    assert got.aggregates["suppressed"] is True
    assert got.aggregates["reason"].startswith("cell(s) (a, x) have fewer than 5 rows")
    assert seen.arith == []
    assert [o.name for o in got.transcript] == ["cell counts >= 5"]  # sizes are public
    assert seen.bits == [[1, 0, 0, 0]]


def test_excluded_rows_below_k_are_refused_unless_the_owners_consent() -> None:
    cells = np.array([[6, 7], [8, 9]])
    table, _, _ = table_of(cells, (["a", "b"], ["x", "y"]), missing=2)
    refused, seen = observed(FISHER, table, {"row": "g", "col": "h"}, Rules.of(5))
    assert "between 1 and 4 rows are outside the table" in refused.aggregates["reason"]
    assert "disclose_excluded" in refused.aggregates["reason"] and seen.arith == []
    parameters = {"row": "g", "col": "h", "disclose_excluded": True}
    got, seen = observed(FISHER, table, parameters, Rules.of(5))
    assert got.aggregates["table"]["total"] == 30
    assert got.aggregates["p_value"] == pytest.approx(fisher_exact(cells).pvalue, rel=1e-12)
    assert FISHER.policy_scope(parameters) == "fisher:excluded"
    assert FISHER.policy_scope({"row": "g", "col": "h"}) == "fisher"
    assert CHI_SQUARE.policy_scope(parameters) == "chi_square:excluded"


def test_a_filter_complement_below_k_refuses() -> None:
    """Filtered on age >= 50: 2 of the 8 rows of cell (a, x) fail it (k = 5), which the same
    table without the filter would give away; every filtered cell is >= k."""
    table, rows, _ = table_of(np.array([[8, 7], [8, 9]]), (["a", "b"], ["x", "y"]))
    table.numeric("age", [40, 40] + [60] * (len(rows) - 2))
    parameters = {
        "row": "g",
        "col": "h",
        "filter": {"op": ">=", "column": "age", "value": 50},
        "disclose_excluded": True,
    }
    got, seen = observed(FISHER, table, parameters, Rules.of(5))
    assert got.aggregates["suppressed"] is True
    assert got.aggregates["reason"].startswith(
        "the filter drops between 1 and 4 rows from cell(s) (a, x), which the same table"
    )
    assert seen.arith == []
    parameters["filter"] = {"op": ">=", "column": "age", "value": 30}  # drops nobody
    got, _ = observed(FISHER, table, parameters, Rules.of(5))
    assert got.aggregates["table"]["cells"] == [[8, 7], [8, 9]]


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"row": "stage", "col": "g"}, r"fisher: parameter 'row': 'stage' has 3 levels"),
        ({"row": "g", "col": "h", "alternative": "both"}, "alternative"),
        ({"row": "g", "col": "h", "correction": True}, "unknown parameter"),
    ],
)
def test_fisher_takes_a_2_x_2_table(parameters: dict[str, Any], message: str) -> None:
    table = (
        Table()
        .categorical("g", ["a", "b"], ["a", "b"])
        .categorical("h", ["x", "y"], ["x", "y"])
        .categorical("stage", ["I", "II", "III"], ["I", "II"])
    )
    with pytest.raises(AnalysisError, match=message):
        FISHER.validate(parameters, table.inputs()[0].manifest)


@pytest.fixture(scope="module")
def pilot() -> tuple[Table, Segments]:
    """The synthetic pilot (``python -m dic_connector.dev.synthetic pilot``) through
    ``mappings/pilot_adrenal.yaml``: both sites' encoded tables, pooled."""
    mapping = load_mapping(MAPPING)
    encoded = []
    for site in ("tm", "tr"):
        clean, _, _ = validate_rows(build_cohort(mapping, pilot_resources(site)).rows, mapping)
        encoded.append(encode_table(clean, mapping))
    columns = encoded[0].columns
    table = Table(
        entries=[c.as_dict() for c in columns],
        values={c.name: np.concatenate([e.column(c.name) for e in encoded]) for c in columns},
    )
    return table, tuple(
        (site, len(e.values)) for site, e in zip(("tm", "tr"), encoded, strict=True)
    )


def test_pilot_fisher_cr_by_bed10(pilot: tuple[Table, Segments]) -> None:
    """PILOT.md: CR by BED10 < 80 vs >= 80 Gy, 5 of 36 and 5 of 10, two-sided Fisher
    p = 0.027 (0.0266). The table is over the 46 patients whose local control is known
    (2 are "n/a"); the rule that the 2 excluded rows may follow from its total needs the
    owners' consent (``disclose_excluded``), as the pilot published "n/a 2"."""
    table, segments = pilot
    bed = table.values["bed10"] / 10
    present = table.values["local_control__present"] == 1
    assert (int((bed < 80).sum()), int((bed >= 80).sum())) == (38, 10)  # all 48 patients
    assert (int((bed[present] < 80).sum()), int((bed[present] >= 80).sum())) == (36, 10)
    refused, seen = observed(FISHER, table, PILOT_TABLE, Rules.of(5), segments)
    assert "between 1 and 4 rows are outside the table" in refused.aggregates["reason"]
    assert seen.arith == []
    got, seen = observed(
        FISHER, table, {**PILOT_TABLE, "disclose_excluded": True}, Rules.of(5), segments
    )
    out = got.aggregates
    assert out["table"]["cells"] == [[5, 31], [5, 5]]
    assert out["table"]["row_totals"] == [36, 10] and out["table"]["total"] == 46
    assert round(out["p_value"], 4) == 0.0266 and round(out["p_value"], 3) == 0.027
    assert out["p_value"] == fisher_exact([[5, 31], [5, 5]]).pvalue
    assert [(o.name, o.elements) for o in got.transcript] == [
        ("each contributor's query set >= 5; n >= 5", 3),
        ("cell counts >= 5", 4),
        ("cell counts", 4),
    ]
    assert seen.arith == [[5, 31, 5, 5]]
    assert got.as_result()["disclosure"]["min_cell_count"] == 5
