"""``fisher`` v1 and ``chi_square`` v1: tests of independence on a two-way table.

Both count the cells of a :mod:`.contingency` table under MPC (same variables, filter and
query set: the rows where both variables are present) and open the table only when **every
cell** may open: each count >= k (the min_cell_count), with the ledger's and the filter's
per-cell checks, and the rows outside the table 0 or >= k (unless the request says
``"disclose_excluded": true`` and the data owners consent, as in :mod:`.contingency`). A
table that would need any suppression is refused with the reason, and no count is opened:
a test on a table with hidden cells would give them away. The test itself is computed in
plaintext on the opened table (scipy):

- ``fisher``: Fisher's exact test of a 2 x 2 table (:func:`scipy.stats.fisher_exact`,
  two-sided by default; the conditional odds ratio is the sample odds ratio ad / bc);
- ``chi_square``: Pearson's chi-square test of an r x c table
  (:func:`scipy.stats.chi2_contingency`), without Yates' continuity correction unless
  ``"correction": true`` (which scipy applies only when there is one degree of freedom).

Future work: a variant that opens only the statistic. chi2 = sum (O - E)^2 / E with
E_ij = R_i C_j / n needs a secret division, which :mod:`mpc.protocols` does not have yet
(fixed-point reciprocal by Newton iteration, Catrina and Saxena FC 2010); with it, the
table's cells would stay shares and a table with small cells could still be tested.

Result: ``{"table": <the contingency result>, "test": ..., "p_value": ..., ...}``; refused:
``{"suppressed": true, "reason": ...}``.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import ALTERNATIVES, FILTER_DISCLOSES, Inputs
from dic_connector.node.analyses.contingency import Contingency, table_parameters
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.twoway import Cells, Variable, shown

TEST_DISCLOSES = (
    "To the three nodes: one bit per contributing dataset version, whether it has at least "
    "min_subset_size rows where both variables are present (and the filter, if any, holds); "
    "one bit, whether their number is >= k, the min_cell_count; one bit per cell, whether "
    "its count is >= k; with a filter, one bit per cell, whether its rows that fail the "
    'filter are 0 or >= k; unless "disclose_excluded": true, one bit, whether the rows '
    "outside the table (missing values, rows the filter drops) are 0 or >= k. If any check "
    "fails, nothing else is opened and the researcher sees which rule refused. Otherwise "
    "every cell count, to the three nodes and then to the researcher, with the test "
    "computed from them in plaintext; the margins and the total follow from the cells, and "
    "with them the number of rows outside the table (N is public)."
)


def finite(x: float) -> float | None:
    """``x``, or None when it is infinite or NaN (not JSON)."""
    return float(x) if math.isfinite(x) else None


class TableTest(Contingency):
    """A test on a table whose every cell opens (see the module doc)."""

    complement_rule: ClassVar[bool] = False
    perturbs: ClassVar[bool] = False  # the test needs the exact table

    @abstractmethod
    def test(self, table: list[list[int]], parameters: dict[str, Any]) -> dict[str, Any]:
        """The test's JSON result on the opened table."""

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        k = d.rules.min_cell_count
        cells = await self.cells(d, inputs, parameters, query)
        if not cells.gate.all():
            return d.refused(self._hidden(cells, k))
        if query.rows is not None:
            absent = self.excluded(d, inputs, cells)
            missing = self.missing_name(cells, parameters, inputs.manifest)
            if not parameters.get("disclose_excluded", False):
                outside = absent.sum().reshape(1)
                safe = await d.safe_residuals("rows outside the table", outside)
                if not safe.all():
                    return d.refused(
                        f"between 1 and {k - 1} rows are outside the table (a missing value of "
                        f"either variable, or the filter fails); opening its cells would "
                        "disclose their number (complement rule). The data owners may allow "
                        f'it: ask with "disclose_excluded": true (policy scope '
                        f"{self.name}:excluded)"
                    )
                if await d.exposes(missing, absent):
                    return d.refused(
                        f"together with earlier releases the table would disclose between 1 "
                        f"and {k - 1} rows outside it of a contributor (release ledger)"
                    )
            d.record([missing], absent.reshape(len(inputs.segments), 1), [True])
        d.record(cells.names, cells.per, [True] * len(cells.names))
        opened = await d.open("cell counts", cells.counts, cells.gate)
        table = shown(k, cells, opened)
        r, c = cells.shape
        counts = [v for v in opened if v is not None]  # every cell opened
        values = [counts[i * c : (i + 1) * c] for i in range(r)]
        return {"table": table, **self.test(values, parameters)}

    @staticmethod
    def _hidden(cells: Cells, k: int) -> str:
        r, c = cells.shape

        def named(which: list[int]) -> str:
            return ", ".join(
                f"({cells.row.levels[x // c]}, {cells.col.levels[x % c]})" for x in which
            )

        below = [x for x in range(r * c) if not cells.primary[x]]
        if below:
            return (
                f"cell(s) {named(below)} have fewer than {k} rows (min_cell_count); "
                "the test opens the whole table, so it is refused (a test that opens "
                "only the statistic is future work)"
            )
        if cells.dropped:
            return (
                f"the filter drops between 1 and {k - 1} rows from cell(s) "
                f"{named(list(cells.dropped))}, which the same table without the filter "
                "would disclose (complement rule); the test opens the whole table, so "
                "it is refused"
            )
        hidden = [x for x in range(r * c) if not cells.gate[x]]
        return (
            f"cell(s) {named(hidden)} would, together with earlier releases, disclose "
            f"between 1 and {k - 1} rows of a contributor (release ledger); the test "
            "opens the whole table, so it is refused"
        )


class Fisher(TableTest):
    name: ClassVar[str] = "fisher"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Fisher's exact test (two-sided by default, scipy) of a 2 x 2 table of two "
        "categorical or boolean columns with two levels, or binaries derived from filters "
        "(e.g. CR by BED10 < 80 vs >= 80 Gy), over the rows where both are present; the "
        "table opens only if every cell is >= min_cell_count."
    )
    discloses: ClassVar[str] = TEST_DISCLOSES + FILTER_DISCLOSES
    parameters_schema: ClassVar[dict[str, Any]] = table_parameters(
        "fisher:excluded",
        alternative={
            "enum": list(ALTERNATIVES),
            "description": "the alternative hypothesis on the "
            "odds ratio (scipy.stats.fisher_exact); default two-sided",
        },
    )

    def check_shape(self, row: Variable, col: Variable) -> None:
        for v in (row, col):
            if len(v.levels) != 2:
                raise AnalysisError(
                    f"{self.name}: parameter '{v.axis}': '{v.name}' has "
                    f"{len(v.levels)} levels; Fisher's exact test here "
                    "takes a 2 x 2 table (a binary derived from a filter, "
                    "or chi_square for r x c)"
                )

    def test(self, table: list[list[int]], parameters: dict[str, Any]) -> dict[str, Any]:
        alternative = parameters.get("alternative", "two-sided")
        # deferred: scipy.stats takes seconds to import
        from scipy.stats import fisher_exact
        result = fisher_exact(np.array(table, dtype=np.int64), alternative=alternative)
        return {
            "test": "fisher_exact",
            "alternative": alternative,
            "odds_ratio": finite(float(result.statistic)),
            "p_value": float(result.pvalue),
        }


class ChiSquare(TableTest):
    name: ClassVar[str] = "chi_square"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Pearson's chi-square test of independence (scipy, no continuity correction by "
        "default) of an r x c table of two categorical or boolean columns or binaries "
        "derived from filters, over the rows where both are present; the table opens only if "
        "every cell is >= min_cell_count."
    )
    discloses: ClassVar[str] = TEST_DISCLOSES + FILTER_DISCLOSES
    parameters_schema: ClassVar[dict[str, Any]] = table_parameters(
        "chi_square:excluded",
        correction={
            "type": "boolean",
            "description": "Yates' continuity correction (applied only "
            "with one degree of freedom; default false)",
        },
    )

    def check_shape(self, row: Variable, col: Variable) -> None:
        for v in (row, col):
            if len(v.levels) < 2:
                raise AnalysisError(
                    f"{self.name}: parameter '{v.axis}': '{v.name}' has "
                    f"{len(v.levels)} level; the test needs at least 2"
                )

    def test(self, table: list[list[int]], parameters: dict[str, Any]) -> dict[str, Any]:
        correction = bool(parameters.get("correction", False))
        # deferred: scipy.stats takes seconds to import
        from scipy.stats import chi2_contingency
        result = chi2_contingency(np.array(table, dtype=np.int64), correction=correction)
        expected: Sequence[Sequence[float]] = result.expected_freq.tolist()
        return {
            "test": "chi_square",
            "correction": correction,
            "statistic": float(result.statistic),
            "dof": int(result.dof),
            "p_value": float(result.pvalue),
            "expected": [[float(e) for e in line] for line in expected],
        }
