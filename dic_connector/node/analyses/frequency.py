"""``frequency`` v1: a frequency table of a categorical column, each cell checked against k.

The encoder stores a categorical as one 0/1 column per declared level (``<col>=<level>``),
so count_l is a sum of shares, local in replicated sharing (Araki et al. CCS 2016; ABY3 §3).
With a missing-value indicator the counts are <onehot_l, present>, all levels in one dot
product round (ABY3 §5.1, one ring element per level): the encoder already zeroes the
one-hot columns of missing rows, and the product enforces it whatever the encoding. A
boolean column x is the table of two levels, ``false`` (1 - x) and ``true`` (x).

**Filters** (:mod:`.filters`): the counts are over the rows where the column is present and
the filter holds (the dot product with their 0/1 shares). The same table without the filter
gives, per level, the present rows of the level that the filter drops; each such count is
checked 0 or >= k under MPC (one bit per level) and a level where it is not is suppressed
before the checks of step 3. Ledger cells are keyed by the filter (``g=CR where {...}``).

Disclosure control (:mod:`dic_connector.node.analyses.disclosure`):

1. The query set (rows where the column is present) must have >= min_subset_size rows in
   every contributing dataset version (one bit per version opened).
2. **Primary suppression.** Every count is compared with the public k under MPC
   ([count_l >= k], 64-bit sign bits, ABY3 §5.3) in one batch and the L bits are opened. A
   count below k is never opened, *including zero*: a level with no row shows ``"<k"`` like
   a level with 1..k-1 rows. (Whether the suppressed cells *together* hold no row or 1..k-1
   rows follows from whether secondary suppression happened; never their number.)
3. **Complements and secondary suppression.** A researcher who knows the total (``count``
   on the same column, or the public row count) subtracts the opened cells: so the
   suppressed mass M (the sum of the suppressed cells) and the unopened mass N - (sum of the
   opened cells) = M + missing must each be 0 or >= k. Both are checked under MPC, opening
   one bit each. With h >= 2 suppressed cells, all below k, M must also be at most
   (h - 1)(k - 1) (one bit more): above it each is >= 1, at h (k - 1) each is exactly
   k - 1 (as :mod:`.twoway` requires). If one fails, the smallest opened cell is
   suppressed too (a tournament minimum under MPC; which cells equal it is opened): every
   opened cell is >= k, so one more always suffices. It shows as ``"suppressed"``, not
   ``"<k"``. When no count is opened at all, every level shows ``"hidden"``: the marks
   would bound the cells, and the total could then pin them.

Only then are the allowed counts opened (one round; none when nothing is allowed).

**Perturbation** (a deployment setting or a data owner's policy, off by default;
:mod:`.perturbation`): every check above is made on the true counts; then each allowed count
is opened as c + v, v the cell-key noise of the level's rows (cell keys: the keys of the
query-set rows, one multiplication, then one dot product per level), and the result says
``"perturbed": {"method": "cellkey", ...}``.

Result: ``{"levels": {level: count, "<k" or "suppressed" (all "hidden" when no count is
opened)}, "min_cell_count": k}``, levels in declared order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    Analysis,
    Inputs,
    column_parameters,
)
from dic_connector.node.analyses.disclosure import Disclosure, Gate, QuerySet, suppressed
from dic_connector.node.analyses.ledger import missing_cell
from dic_connector.node.analyses.manifest import ColumnInfo, one_hot_columns, present_column
from dic_connector.node.analyses.perturbation import PERTURBATION_DISCLOSES, Perturbation
from mpc.protocols import arith
from mpc.session import Session
from mpc.sharing import AShare, concat

#: How a cell hidden by secondary suppression (its count is >= k) is shown.
SECONDARY = "suppressed"
#: every level's mark when no count is opened (neither '<k' nor 'suppressed': a bound
#: that the known total could pin)
HIDDEN = "hidden"


#: The levels of a boolean column's table.
BOOLEAN_LEVELS = ("false", "true")


def levels_of(info: ColumnInfo) -> tuple[str, ...]:
    """The table's levels: a categorical's declared levels, or false/true."""
    return BOOLEAN_LEVELS if info.kind == "boolean" else info.levels


def level_cells(info: ColumnInfo) -> list[str]:
    """The ledger cells of the levels (``g=CR``; ``flag=false``, ``flag=true``)."""
    return [f"{info.name}={level}" for level in levels_of(info)]


def _indicators(inputs: Inputs, info: ColumnInfo) -> list[AShare]:
    """0/1 shares per row of each level: the one-hot columns, or 1 - x and x (local)."""
    if info.kind == "boolean":
        x = inputs.share(info.name)
        return [1 - x, x]
    return [inputs.share(name) for name in one_hot_columns(info)]


async def level_counts(s: Session, inputs: Inputs, info: ColumnInfo,
                       rows_in: AShare | None) -> AShare:
    """Shares of each contributing version's count of each level over the rows ``rows_in``
    (0/1 shares; None: every row), shape (contributors, levels): local sums without them,
    else one per-segment dot product round (one ring element per contributor and level)."""
    columns = _indicators(inputs, info)
    onehot = AShare(s.party, np.stack([c.a for c in columns]), np.stack([c.b for c in columns]))
    lengths = [count for _, count in inputs.segments]
    if rows_in is None:
        per = inputs.segment_sums(onehot)
    else:
        flag = rows_in
        shape = onehot.shape
        wide = AShare(s.party, np.broadcast_to(flag.a, shape), np.broadcast_to(flag.b, shape))
        per = await arith.segment_dot(s, onehot, wide, lengths)
    return AShare(s.party, per.a.T.copy(), per.b.T.copy())


class Frequency(Analysis):
    name: ClassVar[str] = "frequency"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Frequency table of a categorical column (count per declared "
                              "level) or of a boolean (false, true), pooled over the pinned datasets, each count "
                              "suppressed below min_cell_count.")
    discloses: ClassVar[str] = (
        "To the three nodes: one bit per contributing dataset version, whether it has at least "
        "min_subset_size rows where the column is present (if not, nothing else is opened). "
        "For each declared level, one bit, whether its count (rows where the column is "
        "present and equals the level) is >= k, the min_cell_count. Two bits: whether the "
        "sum of the counts below k, and whether the rows not in an opened count (those plus "
        "the missing values), are each 0 or >= k; with two or more counts below k, one bit "
        "more: whether their sum exceeds (h - 1)(k - 1) for h of them; if a check fails, "
        "which of the counts >= k equal their minimum, and the first of them is suppressed "
        "as well. Then exactly the counts still allowed, to the three nodes and then to the "
        "researcher. Counts below k, zero included, are never opened; the researcher sees "
        "them as '<k', and a count suppressed only to protect them as 'suppressed' (every "
        "level as 'hidden' when no count is opened). The total and the number of "
        "missing values are not opened. With a filter, the counts are over the rows where "
        "it holds, and one bit more per level: whether the present rows of that level "
        "that fail the filter (the unfiltered count minus the filtered one) are 0 or >= k; "
        "a level where they are not is suppressed ('suppressed') before the other checks."
        + FILTER_DISCLOSES + PERTURBATION_DISCLOSES)
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "a categorical or boolean typed column")
    column_kinds: ClassVar[frozenset[str]] = frozenset({"categorical", "boolean"})
    complement_rule: ClassVar[bool] = False  # checked cell by cell in compute

    def value_columns(self, info: ColumnInfo, manifest: Mapping[str, ColumnInfo]) -> list[str]:
        return [info.name] if info.kind == "boolean" else one_hot_columns(info)

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int]:
        info = self.typed_column(parameters, manifest)
        return f"the table of '{info.name}'", len(levels_of(info))

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        k = d.rules.min_cell_count
        info = self.typed_column(parameters, inputs.manifest)
        levels = levels_of(info)
        if not levels:
            return {"levels": {}, "min_cell_count": k}
        rows = inputs.row_count
        per = await level_counts(d.session, inputs, info, query.rows)
        counts = per.sum(axis=0)
        cells = [self.cell(c, parameters, inputs.manifest) for c in level_cells(info)]
        primary, gate = await d.cell_gates("level counts", cells, counts, per)
        if "filter" in parameters:
            gate = await self._filter_complements(d, inputs, info, counts, gate)
        if gate.allowed.any():
            hidden = ~gate.allowed
            suppressed_mass = counts[np.flatnonzero(hidden)].sum().reshape(1)
            unopened = rows - counts[np.flatnonzero(gate.allowed)].sum()
            safe = await d.safe_residuals("suppressed mass; rows not in an opened count",
                                          concat([suppressed_mass, unopened.reshape(1)]))
            ok = bool(safe.all())
            small_only = not primary.allowed[np.flatnonzero(hidden)].any()
            h = int(hidden.sum())
            if ok and small_only and h >= 2:
                # h cells below k summing to M > (h - 1)(k - 1) are each >= 1, at
                # h (k - 1) each is k - 1: one bit, [M > (h - 1)(k - 1)]
                bound = (h - 1) * (k - 1)
                ok = not (await d.at_least(f"suppressed mass above {bound}", suppressed_mass,
                                           bound + 1)).all()
            if not ok:
                gate = await self._suppress_smallest(d, counts, gate, info, rows,
                                                     "secondary suppression")
        present = present_column(inputs.manifest, info.name)
        missing = self.cell(missing_cell(info.name), parameters, inputs.manifest)
        if (present is not None or "filter" in parameters) and gate.all():
            # every present row is in an opened cell: N minus their sum opens the missing
            sizes = np.array([count for _, count in inputs.segments], dtype=np.int64)
            absent = (-per.sum(axis=1)).add_public(sizes)  # each contributor's missing
            if await d.exposes(missing, absent):
                gate = await self._suppress_smallest(
                    d, counts, gate, info, rows, "so that no number of missing values follows")
            else:
                d.record([missing], absent.reshape(len(sizes), 1), [True])
        d.record(cells, per, gate.allowed.tolist())
        perturbation = Perturbation.of(d, inputs.record_keys)
        extra: dict[str, Any] = {}
        if perturbation is None:
            opened = await d.open("level counts", counts, gate)
        else:
            columns = _indicators(inputs, info)
            onehot = AShare(d.session.party, np.stack([c.a for c in columns]),
                            np.stack([c.b for c in columns]))
            keys = await perturbation.keys_of(d.session, onehot, query.rows)
            opened = await perturbation.open(d, "level counts", counts, keys, gate)
            extra = {"perturbed": perturbation.as_json()}
        shown: dict[str, int | str] = {}
        shown_any = any(value is not None for value in opened)
        for level, value, large in zip(levels, opened, primary.allowed, strict=True):
            # no count open: no bound either, which with the known total could pin them
            # (every level '<k' and N = levels x (k - 1): each is k - 1)
            shown[level] = value if value is not None else (
                (SECONDARY if large else suppressed(k)) if shown_any else HIDDEN)
        return {"levels": shown, "min_cell_count": k, **extra}

    @staticmethod
    async def _filter_complements(d: Disclosure, inputs: Inputs, info: ColumnInfo,
                                  counts: AShare, gate: Gate) -> Gate:
        """``gate`` with the levels closed whose unfiltered count minus the filtered one
        (present rows of the level that fail the filter) is in 1..k-1: the same table
        without the filter would give it away."""
        flag = present_column(inputs.manifest, info.name)
        present = None if flag is None else inputs.share(flag)
        unfiltered = (await level_counts(d.session, inputs, info, present)).sum(axis=0)
        safe = await d.safe_residuals("present rows of each level that fail the filter",
                                      unfiltered - counts)
        return gate.narrowed("the filter's complement per level", safe.allowed)

    @staticmethod
    async def _suppress_smallest(d: Disclosure, counts: AShare, gate: Gate, info: ColumnInfo,
                                 rows: int, why: str) -> Gate:
        j = await d.smallest("opened level counts", counts, gate, rows.bit_length())
        levels = levels_of(info)
        keep = np.ones(len(levels), dtype=np.bool_)
        keep[j] = False
        return gate.narrowed(f"{why} of level '{levels[j]}'", keep)
