"""``count`` v1: the number of rows, or of rows where a column is present.

n = sum of the ``<column>__present`` flags (a local sum of replicated shares, Araki et al.
CCS 2016 / ABY3 §3: no communication), or the public row count when the column has no
missing-value indicator (or no column is given). Disclosure control
(:meth:`~dic_connector.node.analyses.disclosure.Disclosure.query_set`): each contributing
dataset version has >= min_subset_size present rows, n >= k and N - n (the missing values)
is 0 or >= k, checked under MPC in one circuit that opens only its outcome bits; n is opened
(1 round) only when they all hold.

Result: ``{"n": n}``, or ``{"suppressed": true, "reason": ...}`` naming the rule that refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    Analysis,
    Inputs,
    column_parameters,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet
from dic_connector.node.analyses.manifest import ColumnInfo


class Count(Analysis):
    name: ClassVar[str] = "count"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Number of rows pooled over the pinned datasets, or of rows "
                              "where a column is present (not missing).")
    discloses: ClassVar[str] = (
        "To the three nodes: one bit per contributing dataset version, whether it has at least "
        "min_subset_size rows in the query set (the rows where the column is present, if one "
        "is given); one bit, whether their number n is >= k, the min_cell_count; and one "
        "bit, whether the rows outside the query set are 0 or >= k. Nothing is opened when "
        "the column has no missing values: the row counts are public. If every check holds: "
        "n, to the three nodes and then to the researcher; otherwise nothing else, and the "
        "researcher sees which rule refused." + FILTER_DISCLOSES)
    filterable: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "count rows where this typed column is present (optional)", required=False)

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return []  # only the column's __present flag is read

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        if query.rows is None:
            return {"n": inputs.row_count}  # public: the versions' row counts
        n = self.rows_in(d, inputs, query)
        return {"n": await d.open_one("n", n, query.gate_required())}
