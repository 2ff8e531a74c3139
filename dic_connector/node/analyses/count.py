"""``count`` v1 and v2: the number of rows, of rows where a column is present, or (v2) of
rows where a boolean column is true; with a filter, of those where it holds.

n = sum of the ``<column>__present`` flags (a local sum of replicated shares, Araki et al.
CCS 2016 / ABY3 §3: no communication), or the public row count when the column has no
missing-value indicator (or no column is given). Disclosure control
(:meth:`~dic_connector.node.analyses.disclosure.Disclosure.query_set`): each contributing
dataset version has >= min_subset_size present rows, n >= k and N - n (the missing values)
is 0 or >= k, checked under MPC in one circuit that opens only its outcome bits; n is opened
(1 round) only when they all hold.

With a ``filter`` (:mod:`.filters`) the query set is the rows where the column is present
and the filter holds: n is the sum of their 0/1 shares, and two more complements are checked
in the same circuit (:meth:`~dic_connector.node.analyses.base.Analysis.gate`).

**v2: booleans count where true.** v1 counts the rows where a boolean column is *present*
(300 in issue 14's example, where 130 are true), as it does for any column; v2 counts the
rows where it is true (130). The meaning of a recipe version never changes (an audited result
names the version it was computed by), so this is a new version: v1 keeps its behaviour, v2
is the newest in the catalogue. On a boolean, v2 gates the present rows first (as v1 does)
and then the true rows as a query set of their own
(:meth:`~dic_connector.node.analyses.base.Analysis.gate_true`): each contributor >=
min_subset_size, n >= k, and the false rows 0 or >= k (v1 of the same column minus v2
would give them). On other columns v2 is v1. The proportion true / present comes from
``mean`` of the boolean.

**Perturbation** (a deployment setting or a data owner's policy, off by default;
:mod:`.perturbation`): when the rules ask for it, the opened n is n + v, v the cell-key
noise of the query set's rows (the same rows give the same v in every release), and the
result says ``"perturbed": {"method": "cellkey", "D", "V", "js"}``. A public n (the rows of
the pinned versions) is shown as it is.

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
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.perturbation import PERTURBATION_DISCLOSES, Perturbation
from mpc.sharing import AShare


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
        "researcher sees which rule refused." + FILTER_DISCLOSES + PERTURBATION_DISCLOSES)
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "count rows where this typed column is present (optional)", required=False)

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return []  # only the column's __present flag is read

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        if query.rows is None:
            return {"n": inputs.row_count}  # public: the versions' row counts
        return await open_n(d, inputs, self.rows_in(d, inputs, query), query)


async def open_n(d: Disclosure, inputs: Inputs, n: AShare, query: QuerySet) -> dict[str, Any]:
    """``{"n": n}`` opened through the query set's gate, perturbed when the rules say so."""
    perturbation = Perturbation.of(d, inputs.record_keys)
    if perturbation is None or query.rows is None:
        return {"n": await d.open_one("n", n, query.gate_required())}
    return {"n": await perturbation.open_count(d, "n", n, query.rows, query.gate_required()),
            "perturbed": perturbation.as_json()}


class CountTrue(Count):
    """count v2: as v1, but a boolean column counts the rows where it is true."""

    version: ClassVar[str] = "2"
    summary: ClassVar[str] = ("Number of rows pooled over the pinned datasets, of rows where "
                              "a column is present, or, for a boolean column, of rows where "
                              "it is true.")
    discloses: ClassVar[str] = Count.discloses + (
        " For a boolean column, the query set above is the rows where it is present, and "
        "then, to the three nodes: one bit per contributing dataset version, whether it has "
        "at least min_subset_size rows where the column is true; one bit, whether their "
        "number n is >= k; one bit, whether the rows where it is false are 0 or >= k. Only "
        "if every check holds is n (the rows where it is true) opened, to the three nodes "
        "and then to the researcher.")
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "count rows where this typed column is present, or where a boolean column is true "
        "(optional)", required=False)

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return [info.name] if info.kind == "boolean" else []

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        column = parameters.get("column")
        if column is None or inputs.manifest[column].kind != "boolean":
            return await super().compute(d, inputs, parameters, query)
        true = await self.gate_true(d, inputs, parameters, query, inputs.manifest[column])
        if true.refusal is not None:
            return d.refused(true.refusal)
        return await open_n(d, inputs, self.rows_in(d, inputs, true), true)
