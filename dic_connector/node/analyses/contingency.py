"""``contingency`` v1: a two-way r x c table, every cell checked against k, with secondary
suppression along its rows and columns.

**Variables.** ``"row"`` and ``"col"`` each name a categorical or boolean typed column (its
declared levels; ``false``, ``true``), or a binary derived from a filter (:mod:`.filters`),
``{"filter": <AST>, "labels": ["< 80 Gy", ">= 80 Gy"]}``: its first level holds the rows
where the filter holds, its second the rows where it does not. A variable is **present** on
a row when its column is (for a derived binary: when every typed column its filter reads
is), and the table counts the rows where *both* variables are present and the optional
``"filter"`` holds: a missing value is in no cell (e.g. the pilot's local control "n/a").

**Under MPC and disclosure control**: see :mod:`.twoway` (cells as products of the
levels' 0/1 shares and the query set; the query set gated per contributor and pooled;
primary suppression per cell, with the ledger's and the filter's checks; secondary
suppression along rows and columns, and over the whole table).

**Owners' consent for the excluded rows.** The rows outside the table are N minus its
total, so a table whose every cell opens discloses how many rows lack either variable (2 in
the pilot's CR by BED10 table: local control "n/a"), which the complement rule refuses
below k. ``"disclose_excluded": true`` drops that check (the suppressed mass is still
checked); standing policies cover such a request only when they name the scope
``<analysis>:excluded`` (never ``*``), so the data owners consent explicitly, as the pilot's
owners did by publishing "n/a 2".

**Perturbation** (a deployment setting or a data owner's policy, off by default;
:mod:`.perturbation`): every check is made on the true counts; each allowed cell then opens
as c + v, v the cell-key noise of its rows (cell keys in 3 rounds: the keys weighed by the
query set and a row level, a dot product per cell), and the result says ``"perturbed"``. A
total is the sum of its perturbed cells (additive; it opens nothing itself). ``fisher`` and
``chi_square`` test the exact table (their p-values need it) and are not perturbed.

Result: ``{"rows": {"variable", "levels"}, "columns": {...}, "cells": [[count | "<k" |
"suppressed", ...], ...], "row_totals", "column_totals", "total", "min_cell_count"}``; a
total is shown only when every cell it sums is opened (it opens nothing itself).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import FILTER_DISCLOSES, Analysis, Inputs
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.filters import check_filter_shape, evaluate, referenced_columns
from dic_connector.node.analyses.ledger import missing_cell
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.perturbation import PERTURBATION_DISCLOSES, Perturbation
from dic_connector.node.analyses.twoway import (
    Cells,
    Variable,
    cell_counts,
    hide_smallest,
    present_rows,
    secondary_suppression,
    shown,
    variable,
)
from mpc.protocols import arith
from mpc.sharing import AShare

#: The two variables' parameter names.
AXES = ("row", "col")
#: Most cells of one table.
MAX_CELLS = 400

_VARIABLE_SCHEMA: dict[str, Any] = {
    "oneOf": [
        {"type": "string", "minLength": 1, "description": "a categorical or boolean typed column"},
        {
            "type": "object",
            "required": ["filter"],
            "additionalProperties": False,
            "description": "a binary derived from a filter: where it holds, where it does not",
            "properties": {
                "filter": {"type": "object", "description": "a filter (see 'filter')"},
                "labels": {
                    "type": "array",
                    "minItems": 2,
                    "maxItems": 2,
                    "uniqueItems": True,
                    "items": {"type": "string", "minLength": 1, "maxLength": 64},
                    "description": "names of the two levels: where the filter holds, "
                    "where it does not (default yes, no)",
                },
            },
        },
    ],
}


def table_parameters(scope: str, **extra: dict[str, Any]) -> dict[str, Any]:
    """The parameters schema of a two-way table (``scope``: the excluded-rows policy scope;
    ``extra``: more properties, e.g. a test's options)."""
    return {
        "type": "object",
        "properties": {
            "row": {**_VARIABLE_SCHEMA, "description": "the rows' variable"},
            "col": {**_VARIABLE_SCHEMA, "description": "the columns' variable"},
            "disclose_excluded": {
                "type": "boolean",
                "description": "allow the number of rows outside the table (missing values, "
                "rows the filter drops) to follow from its total even when "
                f"it is below k (standing policies must name {scope})",
            },
            **extra,
        },
        "required": ["row", "col"],
        "additionalProperties": False,
    }


class Contingency(Analysis):
    name: ClassVar[str] = "contingency"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Two-way r x c table of two categorical or boolean columns, or of binaries derived "
        "from filters (e.g. BED10 >= 80 Gy), over the rows where both are present, pooled "
        "over the pinned datasets; each cell suppressed below min_cell_count, with secondary "
        "suppression along rows and columns."
    )
    discloses: ClassVar[str] = (
        "To the three nodes: one bit per contributing dataset version, whether it has at least "
        "min_subset_size rows where both variables are present (and the filter, if any, "
        "holds); one bit, whether their number is >= k, the min_cell_count (if not, nothing "
        "else is opened). For each cell, one bit, whether its count is >= k; with a filter, "
        "one bit per cell more, whether the rows of the cell that fail the filter are 0 or "
        ">= k. Then, for secondary suppression, one bit per row or column with several "
        "hidden cells, whether their sum is 0 or >= k, and two bits, whether the sum of all "
        "hidden cells and the rows not in an opened cell (those plus the rows outside the "
        'table) are each 0 or >= k (the latter not with "disclose_excluded"); for each line '
        "that must hide one more cell, which of its opened counts equal their minimum; "
        "repeated until every line is safe. Then exactly the counts still allowed, to the "
        "three nodes and then to the researcher. Counts below k, zero included, are never "
        "opened ('<k'); a count hidden only to protect them shows 'suppressed'. The rows "
        "outside the table follow from the total when every cell opens (N is public), so "
        'their number must be 0 or >= k unless the request says "disclose_excluded": true.'
        + FILTER_DISCLOSES
        + PERTURBATION_DISCLOSES
    )
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    complement_rule: ClassVar[bool] = False  # checked on the cells in compute
    parameters_schema: ClassVar[dict[str, Any]] = table_parameters("contingency:excluded")

    # -- parameters --------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        super().check_parameters(parameters)
        for axis in AXES:
            spec = parameters[axis]
            if isinstance(spec, dict):
                try:
                    check_filter_shape(spec["filter"])
                except AnalysisError as exc:
                    raise AnalysisError(f"{self.name}: parameter '{axis}': {exc}") from None

    def variables(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> tuple[Variable, Variable]:
        row, col = (variable(self.name, axis, parameters[axis], manifest) for axis in AXES)
        if row.name == col.name:
            raise AnalysisError(
                f"{self.name}: parameters 'row' and 'col' name the same variable '{row.name}'"
            )
        if len(row.levels) * len(col.levels) > MAX_CELLS:
            raise AnalysisError(
                f"{self.name}: a table of {len(row.levels)} x "
                f"{len(col.levels)} cells; at most {MAX_CELLS} cells"
            )
        self.check_shape(row, col)
        return row, col

    def check_shape(self, row: Variable, col: Variable) -> None:
        """:class:`AnalysisError` when a test needs another table shape (any shape here)."""

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        super().validate(parameters, manifest)
        self.variables(parameters, manifest)

    def columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo] | None = None
    ) -> list[str]:
        self.check_parameters(parameters)
        if manifest is None:
            named: list[str] = []
            for axis in AXES:
                spec = parameters[axis]
                named += [spec] if isinstance(spec, str) else referenced_columns(spec["filter"])
            return list(dict.fromkeys(named + referenced_columns(parameters.get("filter"))))
        row, col = self.variables(parameters, manifest)
        f = self.filter_of(parameters, manifest)
        return list(
            dict.fromkeys([*row.columns, *col.columns, *(f.columns if f is not None else ())])
        )

    def typed_columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> list[str]:
        row, col = self.variables(parameters, manifest)
        f = self.filter_of(parameters, manifest)
        return sorted({*row.typed, *col.typed, *(f.typed_columns if f is not None else ())})

    def policy_scope(self, parameters: dict[str, Any]) -> str:
        return f"{self.name}:excluded" if parameters.get("disclose_excluded") else self.name

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int]:
        row, col = self.variables(parameters, manifest)
        r, c = len(row.levels), len(col.levels)
        return f"the {r} x {c} table of '{row.name}' by '{col.name}'", r * c

    # -- the program -------------------------------------------------------------------

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]) -> QuerySet:
        """The query set: the rows where both variables are present and the filter holds;
        each contributor >= min_subset_size, their number >= k. Its complement (the rows
        outside the table) is checked on the cells (:meth:`compute`)."""
        row, col = self.variables(parameters, inputs.manifest)
        f = self.filter_of(parameters, inputs.manifest)
        rows = await present_rows(d.session, inputs, row, col)
        if f is not None:
            passes = await evaluate(d.session, f, inputs.share, inputs.row_count)
            rows = passes if rows is None else await arith.mul(d.session, passes, rows)
        segment_rows = [count for _, count in inputs.segments]
        sizes: AShare | list[int] = segment_rows if rows is None else inputs.segment_sums(rows)
        query = await d.query_set(
            sizes, inputs.sites, inputs.row_count, complement=False, segment_rows=segment_rows
        )
        return dataclasses.replace(query, rows=rows)

    async def cells(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> Cells:
        """The cells counted under MPC, with primary suppression (and the ledger's and the
        filter's per-cell checks)."""
        row, col = self.variables(parameters, inputs.manifest)
        per = await cell_counts(d.session, inputs, row, col, query.rows)
        counts = per.sum(axis=0)
        names = [
            self.cell(f"{row.name}={a} & {col.name}={b}", parameters, inputs.manifest)
            for a in row.levels
            for b in col.levels
        ]
        primary, gate = await d.cell_gates("cell counts", names, counts, per)
        dropped: tuple[int, ...] = ()
        if "filter" in parameters:
            present = await present_rows(d.session, inputs, row, col)
            unfiltered = (await cell_counts(d.session, inputs, row, col, present)).sum(axis=0)
            safe = await d.safe_residuals(
                "rows of each cell that fail the filter", unfiltered - counts
            )
            gate = gate.narrowed("the filter's complement per cell", safe.allowed)
            dropped = tuple(int(x) for x in np.flatnonzero(~safe.allowed))
        return Cells(row, col, per, counts, names, primary, gate, dropped)

    def missing_name(
        self, cells: Cells, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> str:
        """The ledger cell of the rows outside the table."""
        return self.cell(missing_cell(f"{cells.row.name} & {cells.col.name}"), parameters, manifest)

    def excluded(self, d: Disclosure, inputs: Inputs, cells: Cells) -> AShare:
        """Shares of each contributor's rows outside the table, shape (contributors,)."""
        sizes = np.array([count for _, count in inputs.segments], dtype=np.int64)
        return (-cells.per.sum(axis=1)).add_public(sizes)

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        cells = await self.cells(d, inputs, parameters, query)
        check_excluded = not parameters.get("disclose_excluded", False)
        gate = await secondary_suppression(d, cells, cells.gate, inputs.row_count, check_excluded)
        missing = self.missing_name(cells, parameters, inputs.manifest)
        while query.rows is not None and gate.all():
            absent = self.excluded(d, inputs, cells)
            if check_excluded and await d.exposes(missing, absent):
                gate = await hide_smallest(
                    d,
                    cells,
                    gate,
                    range(len(cells.names)),
                    "table",
                    inputs.row_count,
                    "so that no number of missing values follows",
                )
                gate = await secondary_suppression(d, cells, gate, inputs.row_count, check_excluded)
                continue
            d.record([missing], absent.reshape(len(inputs.segments), 1), [True])
            break
        d.record(cells.names, cells.per, gate.allowed.tolist())
        perturbation = Perturbation.of(d, inputs.record_keys)
        if perturbation is None:
            opened = await d.open("cell counts", cells.counts, gate)
            return shown(d.rules.min_cell_count, cells, opened)
        keys = await perturbation.table_keys(
            d.session,
            await cells.row.indicators(d.session, inputs),
            await cells.col.indicators(d.session, inputs),
            query.rows,
        )
        opened = await perturbation.open(d, "cell counts", cells.counts, keys, gate)
        return {**shown(d.rules.min_cell_count, cells, opened),
                "perturbed": perturbation.as_json()}
