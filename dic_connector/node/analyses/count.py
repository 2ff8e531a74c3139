"""``count`` v1: the number of rows, or of rows where a column is present.

n = sum of the ``<column>__present`` flags (a local sum of replicated shares, Araki et al.
CCS 2016 / ABY3 §3: no communication), or the public row count when the column has no
missing-value indicator (or no column is given). Disclosure control: [n >= k] is computed
under MPC (:func:`dic_connector.node.analyses.disclosure.at_least`: 64-bit sign bit, ABY3 §5.3)
and only that bit is opened; n is opened (1 round) only when the bit allows it.

Result: ``{"n": n}``, or ``{"n": "<k", "suppressed": true}`` (k substituted, e.g. "<5").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from dic_connector.node.analyses.base import (
    Analysis,
    ColumnInfo,
    Inputs,
    column_parameters,
    present_column,
)
from dic_connector.node.analyses.disclosure import (
    at_least,
    check_min_cell_count,
    open_allowed,
    public_share,
    suppressed,
)
from mpc.session import Session
from mpc.sharing import AShare


def present_count(s: Session, inputs: Inputs, column: str | None) -> AShare:
    """Shares of the number of rows where ``column`` is present (shape (1,), local)."""
    present = present_column(inputs.manifest, column) if column is not None else None
    if present is None:
        return public_share(s.party, [inputs.row_count])
    return inputs.share(present).sum().reshape(1)


async def guarded_count(s: Session, n: AShare, k: int) -> int | None:
    """Open [n >= k]; then n if allowed (None when suppressed). n has shape (1,)."""
    allowed = await at_least(s, n, k)
    if not allowed[0]:
        return None
    (value,) = await open_allowed(s, n, allowed)
    return value


class Count(Analysis):
    name: ClassVar[str] = "count"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Number of rows pooled over the pinned datasets, or of rows "
                              "where a column is present (not missing).")
    discloses: ClassVar[str] = (
        "To the three nodes: one bit, whether n >= k, where n is the number of rows (where "
        "the column is present, if one is given) and k the min_cell_count. If n >= k: n, to "
        "the three nodes and then to the researcher. If n < k: nothing else is opened; the "
        "researcher sees n as '<k'.")
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "count rows where this typed column is present (optional)", required=False)

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return []  # only the column's __present flag is read

    async def run(self, session: Session, inputs: Inputs, parameters: dict[str, Any],
                  min_cell_count: int) -> dict[str, Any]:
        k = check_min_cell_count(min_cell_count)
        self.validate(parameters, inputs.manifest)
        n = await guarded_count(session, present_count(session, inputs,
                                                       parameters.get("column")), k)
        if n is None:
            return {"n": suppressed(k), "suppressed": True}
        return {"n": n}
