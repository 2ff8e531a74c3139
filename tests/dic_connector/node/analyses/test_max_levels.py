"""The ``max_levels`` rule on three parties: a table or grouping with more levels (cells,
groups, bins) than the rules allow is refused before anything is opened, with a reason
naming the rule; at the limit it is released as without the rule (against the plaintext
counts), and the result states the limit among the rules applied."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.base import Analysis
from dic_connector.node.analyses.contingency import Contingency
from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Rules, check_max_levels
from dic_connector.node.analyses.fisher import ChiSquare
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.histogram import Histogram
from dic_connector.node.analyses.prevalence import Prevalence
from dic_connector.node.analyses.ptable import CellKeyParams
from dic_connector.node.analyses.survival import Survival
from dic_connector.node.analyses.ttest import TTest
from tests.dic_connector.node.analyses.support import Table, observed, run

RNG = np.random.default_rng(11)
ROWS = 60
ZIP = ["80331", "80333", "80335", "80336"]
SEX = ["f", "m"]


def table() -> Table:
    return (Table()
            .categorical("zip", ZIP, [ZIP[i % 4] for i in range(ROWS)])
            .categorical("sex", SEX, [SEX[(i // 4) % 2] for i in range(ROWS)])
            .boolean("dm", [i % 3 == 0 for i in range(ROWS)])
            .numeric("age", [int(a) for a in RNG.integers(20, 90, ROWS)])
            .numeric("days", [int(d) for d in RNG.integers(1, 400, ROWS)])
            .boolean("died", [i % 2 == 0 for i in range(ROWS)]))


#: (recipe, parameters, its number of levels as max_levels counts them, what the reason names)
CASES: list[tuple[Analysis, dict[str, Any], int, str]] = [
    (Frequency(), {"column": "zip"}, 4, "the table of 'zip'"),
    (Contingency(), {"row": "zip", "col": "sex"}, 8, "the 4 x 2 table of 'zip' by 'sex'"),
    (ChiSquare(), {"row": "zip", "col": "sex"}, 8, "the 4 x 2 table"),
    (Prevalence(), {"numerator": "dm", "by": ["zip", "sex"]}, 8, "the cells of 'zip' x 'sex'"),
    (Histogram(), {"column": "age", "breaks": [20, 40, 60, 90]}, 5, "the histogram (3 bins"),
    (Survival(), {"time": "days", "event": "died", "by": "zip"}, 4,
     "the grouping 'by' ('zip')"),
]


@pytest.mark.parametrize(("recipe", "parameters", "levels", "named"), CASES,
                         ids=[c[0].name for c in CASES])
def test_more_levels_than_max_levels_are_refused_before_anything_opens(
        recipe: Analysis, parameters: dict[str, Any], levels: int, named: str) -> None:
    data = table()
    assert recipe.table_size(parameters, data.inputs()[0].manifest) is not None
    release, seen = observed(recipe, data, parameters, Rules.of(5, max_levels=levels - 1))
    assert release.refused and release.transcript == () and seen.openings == []
    reason = release.aggregates["reason"]
    assert named in reason and f"{levels} levels" in reason and "(max_levels)" in reason
    assert f"the {levels - 1} allowed" in reason
    assert release.as_result()["disclosure"]["max_levels"] == levels - 1


def test_at_the_limit_the_table_is_released_as_without_the_rule() -> None:
    data = table()
    limited = run(Frequency(), data, {"column": "zip"}, Rules.of(5, max_levels=4))
    free = run(Frequency(), data, {"column": "zip"}, Rules.of(5))
    assert limited["levels"] == free["levels"] == {z: ROWS // 4 for z in ZIP}
    cells = run(Contingency(), data, {"row": "zip", "col": "sex"}, Rules.of(5, max_levels=8))
    expected = [[sum(1 for i in range(ROWS) if i % 4 == r and (i // 4) % 2 == c)
                 for c in range(2)]
                for r in range(4)]
    assert cells["cells"] == expected


def test_recipes_without_a_table_are_not_limited() -> None:
    data = table()
    assert Count().table_size({"column": "age"}, data.inputs()[0].manifest) is None
    assert run(Count(), data, {"column": "age"}, Rules.of(5, max_levels=2))["n"] == ROWS
    assert Survival().table_size({"time": "days", "event": "died"},
                                 data.inputs()[0].manifest) is None
    assert TTest().table_size({"column": "age", "by": "sex"},
                              data.inputs()[0].manifest) == ("the grouping 'by' ('sex')", 2)


def test_strictest_rules_and_the_limit_checked() -> None:
    deployment = Rules.of(5, 5, None, 50, False)
    owner = Rules.of(7, 10, CellKeyParams(3, 2.0), 20, True)
    both = deployment.tightened(owner)
    assert both == owner.tightened(deployment) == Rules.of(7, 10, CellKeyParams(3, 2.0), 20,
                                                           True)
    assert Rules.of(5).tightened(Rules.of(3, max_levels=9)).max_levels == 9
    assert Rules.of(5).tightened(Rules.of(3)) == Rules.of(5)
    for bad in (1, 0, True, 2.5, 10**7):
        with pytest.raises(ConfigError, match="max_levels"):
            check_max_levels(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_levels"):
        Rules.of(5, max_levels=1)
