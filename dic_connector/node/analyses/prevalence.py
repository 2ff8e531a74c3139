"""``prevalence`` v1: a case definition over a population, per cell of up to three
categorical or boolean columns (prevalence of diabetes by zip code x sex x age group).

**What is counted.** The population (the **denominator**) is the rows where the
``filter`` holds (every row without one), every ``by`` column is present and, when the
``numerator`` is a boolean column, that column is present too. The **numerator** is the
rows of the population that are cases: where the boolean is true, or where the numerator
filter holds (a filter's missing values never match, :mod:`.filters`). Each cell of the
cross-classification of the ``by`` columns (declared levels; ``false``, ``true`` for a
boolean) gets its denominator d, numerator x, proportion x / d and a Wilson score 95%
interval (Wilson, JASA 1927), computed in plaintext from the opened d and x.

**Under MPC** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). Each row's
weight packs both counts in one ring element, w = q + 2^32 q c (q: the population's 0/1
share, c: the case's; one multiplication round), so one weighted group-by gives
P = d + 2^32 x per cell and contributor (exact: both are below 2^32). The group-by reads
each ``by`` column's level code (one share per row, not its one-hot columns): the
column with most levels is one side, the others are combined into one code
(c_2 L_3 + c_3, local), and :func:`mpc.protocols.groupby.count_by2` builds both one-hot
matrices in one batch (declared levels are dense codes 0 .. L - 1, so by rotation of the
level code's local split, 2 rounds and no comparison: :func:`~mpc.protocols.groupby.one_hots`)
and takes the weighted cross product (a local matrix product, reshared once: "product of
one-hots", ABY3 §5.1), chunk by chunk of rows, so memory is bounded by the chunk; one column uses
:func:`~mpc.protocols.groupby.count_by`, none a local sum. d and x are then separated
exactly by one bit decomposition of the few P (:func:`mpc.protocols.bits.a2b`) and a B2A of
its two halves. Rows outside the population have weight 0, so the codes of missing values
(encoded 0) count nowhere.

**Disclosure control** (:mod:`.disclosure`), every check under MPC opening only its bits:

1. The population is the query set: each contributing dataset version >= min_subset_size
   rows of it, their number >= k (else nothing else is opened). Its size n is not opened.
2. **Primary suppression**, per cell: d >= k (zero included: an empty cell shows no
   proportion), and x and d - x (the non-cases, the complement) each 0 or >= k; with the
   release ledger, also every sum of d, x or d - x over contributors that earlier releases
   make derivable. With a filter, the same request without it gives the rows the filter
   drops from each cell: their d, x and d - x must each be 0 or >= k too. A cell that fails
   shows no number (every field null). A proportion of exactly 0 or 1 can open (x or d - x
   is 0): a cell where nobody, or everybody, is a case.
3. **Secondary suppression.** The margins of the cross-classification are assumed known
   (a ``frequency``, ``contingency`` or this recipe over fewer columns opens them), so for
   every line of the table (the cells that differ only in one column's level) and for d,
   x and d - x alike, the hidden cells not yet known (U) must not be determined by their
   sum M (the margin minus what is open or known): M = 0 (they are all empty, which is
   then known: a count of 0 is not protected, as in :mod:`.frequency`; but in a table of
   two or more columns a line with opened cells whose hidden denominators sum to 0 hides
   one more, since known empty cells would pin cells of the crossing lines), or |U| >= 2,
   M >= k (below k it is a small count itself) and M != |U| (k - 1) (which puts every cell
   at k - 1). A line with opened cells that fails hides one more cell, chosen from the
   public pattern alone (the opened cell whose crossing lines already hide most cells,
   then the first), which opens nothing; a line without opened cells cannot hide more,
   and its U counts as known in the other lines from then on (as in :mod:`.twoway`). Over
   the whole table the same holds, and the rows not in an opened cell (N is public) must
   be 0 or >= k. Rounds repeat until nothing changes; each opens four bits per (line,
   quantity) it checks. Secondary cells are shown like primary ones (null): which cells
   were hidden for which reason is not shown. These are checks along lines, not a
   linear-programming audit; the tests check on random two-way and zip x sex x age
   tables (3 x 2 x 2, 600 random tables once, 15 in every run) by linear programming
   over every line sum that no hidden count in 1..k-1 that the margins alone leave open
   is determined by the margins and the opened cells.
4. With a ledger, when every cell opens, the rows outside the table per contributor must
   not be derivable below k with earlier releases, else the first cell is hidden and step
   3 runs again.

**Perturbation** (a deployment setting or a data owner's policy, off by default;
:mod:`.perturbation`): every check above is made on the true counts, exactly as without
it; then each allowed cell's denominator opens as d + v_d and its numerator as x + v_x.
Each is a cell of its own, with its own key, the sum of the record keys of the rows it
counts: the population's rows in the cell for d, its cases' rows in the cell for x (a
different set of rows, so an independent noise, unless every row of the cell is a case:
then x = d and x' = d'). The keys are weighed by the population and by the cases (one
multiplication round) and summed per cell by one more group-by with both as weight vectors
(64-bit sums cannot share the packed weight; the one-hot bits serve both), so the
perturbed run does the group-by twice. The same rows get the same noise in any recipe:
with no filter and no ``by``, d + v_d is ``count``'s n of the numerator column and x + v_x
``count`` v2's; and as ``count`` shows a public n, a public denominator (no filter, no
``by``, a numerator without missing values: the row count) is shown exact. The result
shows the opened d' = d + v_d and x' = x + v_x as they are (consistent with every other
release of those rows), and computes the proportion and the Wilson interval in plaintext
from the clamped max(d', 0) and min(max(x', 0), max(d', 0)): with independent noise x' can
exceed d' (when nearly every row is a case) and d' can be 0 (d <= D); a proportion is
never outside [0, 1], and none is shown when the clamped denominator is 0. The result says
``"perturbed"``.

Result: ``{"by": [columns], "cells": [{"levels": [...], "denominator": int | null,
"numerator": int | null, "proportion": float | null, "ci": [low, high] | null}, ...],
"min_cell_count": k, "ci_method": "wilson", "ci_level": 0.95}``, cells in row-major order
of the ``by`` columns' levels; with perturbation also ``"perturbed": {"method": "cellkey",
"D", "V", "js"}``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import FILTER_DISCLOSES, Analysis, Inputs
from dic_connector.node.analyses.disclosure import (
    Disclosure,
    Gate,
    QuerySet,
    concat_bits,
    public_share,
)
from dic_connector.node.analyses.filters import (
    Filter,
    check_filter_shape,
    evaluate,
    parse_filter,
    referenced_columns,
)
from dic_connector.node.analyses.frequency import levels_of
from dic_connector.node.analyses.ledger import missing_cell
from dic_connector.node.analyses.manifest import TYPED_KINDS, ColumnInfo, present_column
from dic_connector.node.analyses.perturbation import PERTURBATION_DISCLOSES, Perturbation
from mpc.protocols import arith, bits, groupby
from mpc.ring import RingArray
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Most ``by`` columns.
MAX_BY = 3
#: Most cells of one cross-classification.
MAX_CELLS = 5000
#: Level of the confidence intervals.
CI_LEVEL = 0.95
#: Where the numerator sits in a packed weight (d + 2^32 x).
PACK_BITS = 32
#: Kinds a ``by`` column may have.
BY_KINDS: frozenset[str] = frozenset({"categorical", "boolean"})


def wilson(cases: int, n: int, level: float = CI_LEVEL) -> tuple[float, float]:
    """The Wilson score interval of cases / n (Wilson, JASA 1927; ``proportion_confint(...,
    method="wilson")`` in statsmodels): (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) /
    (1 + z^2/n)."""
    # deferred: scipy.stats takes seconds to import
    from scipy import stats
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = cases / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    scale = 1 + z * z / n
    return max(0.0, (centre - spread) / scale), min(1.0, (centre + spread) / scale)


def shown_cell(levels: list[str], denominator: int | None, numerator: int | None
               ) -> dict[str, Any]:
    """A cell as the result shows it: the opened denominator and numerator as they are,
    the proportion and the Wilson interval of x' / d' with d' = max(d, 0) and
    x' = min(max(x, 0), d'), so that perturbed counts (each with its own noise) never
    give a proportion outside [0, 1]; none when d' = 0 (a perturbed denominator can be 0)
    or the cell is hidden."""
    if denominator is None or numerator is None:
        return {"levels": levels, "denominator": None, "numerator": None,
                "proportion": None, "ci": None}
    d = max(denominator, 0)
    x = min(max(numerator, 0), d)
    if d == 0:
        return {"levels": levels, "denominator": denominator, "numerator": numerator,
                "proportion": None, "ci": None}
    low, high = wilson(x, d)
    return {"levels": levels, "denominator": denominator, "numerator": numerator,
            "proportion": x / d, "ci": [low, high]}


@dataclass(frozen=True)
class By:
    """One column of the cross-classification."""

    info: ColumnInfo
    levels: tuple[str, ...]
    #: Its ``__present`` flag (None: never missing).
    flag: str | None


@dataclass(frozen=True)
class Numerator:
    """The case definition: a boolean column, or a filter."""

    #: What cells name it by: the column, or ``[<canonical filter>]``.
    name: str
    column: ColumnInfo | None
    case: Filter | None
    #: The boolean's ``__present`` flag (a filter needs none).
    flag: str | None

    @property
    def columns(self) -> list[str]:
        if self.case is not None:
            return list(self.case.columns)
        assert self.column is not None
        return [self.column.name, *([self.flag] if self.flag else [])]

    @property
    def typed(self) -> list[str]:
        if self.case is not None:
            return list(self.case.typed_columns)
        assert self.column is not None
        return [self.column.name]


def line_cells(shape: Sequence[int]) -> list[tuple[str, list[int]]]:
    """The lines of a table of ``shape`` (flat indices in row-major order): for each
    axis, the cells that differ only along it; one line per combination of the other
    axes' levels."""
    index = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(tuple(shape))
    out: list[tuple[str, list[int]]] = []
    for axis in range(len(shape)):
        moved = np.moveaxis(index, axis, -1).reshape(-1, shape[axis])
        out += [(f"axis {axis}", [int(v) for v in row]) for row in moved]
    return out


def _reorder(shape: Sequence[int], first: int) -> np.ndarray[Any, np.dtype[np.int64]]:
    """For a table computed with axis ``first`` moved to the front, the flat positions
    that give it back in row-major order of ``shape``."""
    rest = [i for i in range(len(shape)) if i != first]
    order = [first, *rest]
    computed = np.arange(int(np.prod(shape, dtype=np.int64))).reshape(
        tuple(shape[i] for i in order))
    return np.asarray(np.transpose(computed, [order.index(j) for j in range(len(shape))])
                      .ravel(), dtype=np.int64)


def _check_sums(component: RingArray, picks: np.ndarray[Any, np.dtype[np.int64]],
                starts: np.ndarray[Any, np.dtype[np.int64]], tests: int,
                opened: np.ndarray[Any, np.dtype[np.intp]] | None) -> RingArray:
    """One share component of the sums a round of secondary suppression checks: the
    entries ``picks`` summed per check (``starts``), then, when ``opened`` is given, minus
    the opened cells' denominators (the rows not in an opened cell, before adding N).
    Sums of share components wrap mod 2^64 as the shared sums do."""
    out = np.zeros(tests, dtype=np.uint64)
    if len(starts):
        out[:len(starts)] = np.add.reduceat(component[picks], starts)
    if opened is not None:
        out[-1:] -= np.sum(component[opened], dtype=np.uint64, keepdims=True)  # wraps
    return out


async def packed_cell_sums(s: Session, inputs: Inputs, codes: Sequence[AShare],
                           shape: Sequence[int], weight: AShare) -> AShare:
    """Each contributor's sum of ``weight`` over the rows of each cell, shape
    (contributors, cells), cells in row-major order of ``shape``; ``codes`` are the
    columns' level codes (0 .. L - 1 per row; values of rows with weight 0 do not
    matter). One weighted group-by per contributor (see the module doc). Weights of
    shape (rows, W): W sums per cell from the same group-by, shape (contributors, W,
    cells)."""
    cells = int(np.prod(shape, dtype=np.int64))
    segments = [count for _, count in inputs.segments]
    lead = tuple(weight.shape[1:])  # () or (W,)
    if not codes:
        columns = AShare(s.party, weight.a.T, weight.b.T)  # rows last
        sums = inputs.segment_sums(columns)  # lead + (contributors,)
        return AShare(s.party, np.moveaxis(sums.a, -1, 0).copy(),
                      np.moveaxis(sums.b, -1, 0).copy()).reshape(len(segments), *lead, 1)
    first = int(np.argmax(shape))
    rest = [i for i in range(len(shape)) if i != first]
    x, ly = codes[first], 1
    y: AShare | None = None
    for i in rest:
        y = codes[i] if y is None else y * shape[i] + codes[i]
        ly *= shape[i]
    order = _reorder(shape, first)
    per: list[AShare] = []
    start = 0
    for count in segments:
        if count == 0:
            zero = np.zeros((*lead, cells), dtype=np.uint64)
            per.append(AShare(s.party, zero, zero.copy()))
            continue
        part = slice(start, start + count)
        w = weight[part]
        if y is None:
            table = await groupby.count_by(s, x[part], range(shape[first]), weights=w)
        else:
            table = await groupby.count_by2(s, x[part], range(shape[first]), y[part],
                                            range(ly), weights=w)
        flat = table.reshape(*lead, cells)
        per.append(AShare(s.party, flat.a[..., order], flat.b[..., order]))
        start += count
    return concat([p.reshape(1, *lead, cells) for p in per], axis=0)


async def unpack(s: Session, packed: AShare) -> tuple[AShare, AShare]:
    """d and x from P = d + 2^32 x (0 <= d, x < 2^32), exactly: one bit decomposition
    (7 rounds) and one B2A of both halves (1 round)."""
    shape = packed.shape
    words = await bits.a2b(s, packed.reshape(-1))
    low = words & np.uint64((1 << PACK_BITS) - 1)
    high = words >> PACK_BITS
    both = await bits.b2a(s, concat_bits([low, high]))
    size = int(np.prod(shape, dtype=np.int64))
    return both[:size].reshape(*shape), both[size:].reshape(*shape)


class Prevalence(Analysis):
    name: ClassVar[str] = "prevalence"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Prevalence of a case definition (a boolean column or a filter) in a population "
        "(the filter), per cell of up to three categorical or boolean columns: denominator, "
        "numerator, proportion and Wilson 95% interval, pooled over the pinned datasets; "
        "cells suppressed when the denominator is below min_cell_count or the numerator "
        "or the non-cases are in 1..k-1, with secondary suppression along every line.")
    discloses: ClassVar[str] = (
        "To the three nodes: one bit per contributing dataset version, whether it has at "
        "least min_subset_size rows in the population (the rows where the filter holds and "
        "every 'by' column, and a boolean numerator, is present); one bit, whether their "
        "number is >= k, the min_cell_count (if not, nothing else is opened). For each "
        "cell, one bit, whether its denominator is >= k, and two, whether its numerator "
        "and its non-cases are each 0 or >= k; with a filter, three bits per cell more, "
        "whether the rows the filter drops from the cell (all, cases, non-cases) are each "
        "0 or >= k; with the release ledger, one bit per sum over contributors that earlier "
        "releases make derivable. Then, for secondary suppression, per line of the table "
        "with hidden cells and for the denominators, numerators and non-cases each, four "
        "bits placing the sum of its hidden cells not yet known (0; below k; exactly "
        "(k - 1) per cell; above), and for the whole table two more, whether the rows not "
        "in an opened cell are 0 or >= k; cells hidden "
        "to protect them are chosen from the public pattern of hidden cells; repeated until "
        "every line is safe. Then exactly the denominators and numerators of the cells "
        "still allowed, to the three nodes and then to the researcher, who also gets their "
        "proportions and intervals. The population's size is not opened; a hidden cell "
        "shows no number." + FILTER_DISCLOSES + PERTURBATION_DISCLOSES
        + " A denominator's cell key is that of the population's rows in the cell, a "
        "numerator's that of its cases; proportions and intervals are computed from the "
        "perturbed counts, the numerator clamped to the denominator.")
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    complement_rule: ClassVar[bool] = False  # checked on the cells in compute
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "numerator": {"oneOf": [
                {"type": "string", "minLength": 1,
                 "description": "a boolean typed column: the cases are where it is true"},
                {"type": "object", "description": "a filter (see 'filter'): the cases are "
                                                  "the rows where it holds"}]},
            "by": {"type": "array", "maxItems": MAX_BY, "uniqueItems": True,
                   "items": {"type": "string", "minLength": 1},
                   "description": "categorical or boolean typed columns to cross-classify "
                                  "by (none: the whole population)"},
        },
        "required": ["numerator"],
        "additionalProperties": False,
    }

    # -- parameters --------------------------------------------------------------------

    def check_parameters(self, parameters: dict[str, Any]) -> None:
        super().check_parameters(parameters)
        if isinstance(parameters["numerator"], dict):
            try:
                check_filter_shape(parameters["numerator"])
            except AnalysisError as exc:
                raise AnalysisError(f"{self.name}: parameter 'numerator': {exc}") from None

    def by_columns(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[By]:
        out: list[By] = []
        for i, name in enumerate(parameters.get("by", [])):
            info = manifest.get(name)
            if info is None or info.kind not in TYPED_KINDS:
                typed = sorted(n for n, c in manifest.items() if c.kind in BY_KINDS)
                raise AnalysisError(f"{self.name}: parameter 'by/{i}': unknown column "
                                    f"'{name}'; expected a categorical or boolean typed "
                                    f"column: {', '.join(typed) or '(none)'}")
            if info.kind not in BY_KINDS:
                raise AnalysisError(f"{self.name}: parameter 'by/{i}': '{name}' is "
                                    f"{info.kind}; expected a categorical or boolean column")
            levels = levels_of(info)
            if not levels:
                raise AnalysisError(f"{self.name}: parameter 'by/{i}': categorical "
                                    f"'{name}' declares no level")
            out.append(By(info, levels, present_column(manifest, name)))
        cells = math.prod(len(b.levels) for b in out)
        if cells > MAX_CELLS:
            raise AnalysisError(f"{self.name}: parameter 'by': {cells} cells; at most "
                                f"{MAX_CELLS}")
        return out

    def numerator(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                  ) -> Numerator:
        spec = parameters["numerator"]
        if isinstance(spec, dict):
            try:
                f = parse_filter(spec, manifest)
            except AnalysisError as exc:
                raise AnalysisError(f"{self.name}: parameter 'numerator': {exc}") from None
            return Numerator(f"[{f.canonical}]", None, f, None)
        info = manifest.get(spec)
        if info is None or info.kind != "boolean":
            what = "unknown column" if info is None or info.kind not in TYPED_KINDS else (
                f"'{spec}' is {info.kind}; expected a boolean column or a filter, e.g. "
                f'{{"op": "==", "column": "{spec}", "value": ...}}')
            raise AnalysisError(f"{self.name}: parameter 'numerator': "
                                + (f"{what} '{spec}'" if what == "unknown column" else what))
        return Numerator(info.name, info, None, present_column(manifest, spec))

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        super().validate(parameters, manifest)
        by = self.by_columns(parameters, manifest)
        num = self.numerator(parameters, manifest)
        if num.column is not None and num.column.name in {b.info.name for b in by}:
            raise AnalysisError(f"{self.name}: parameter 'by': the numerator "
                                f"'{num.column.name}' cannot be a 'by' column too")

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int] | None:
        by = self.by_columns(parameters, manifest)
        if not by:
            return None
        names = " x ".join(f"'{b.info.name}'" for b in by)
        return f"the cells of {names}", math.prod(len(b.levels) for b in by)

    def columns(self, parameters: dict[str, Any],
                manifest: Mapping[str, ColumnInfo] | None = None) -> list[str]:
        self.check_parameters(parameters)
        spec = parameters["numerator"]
        if manifest is None:
            named = list(parameters.get("by", []))
            named += [spec] if isinstance(spec, str) else referenced_columns(spec)
            return list(dict.fromkeys(named + referenced_columns(parameters.get("filter"))))
        out: list[str] = []
        for b in self.by_columns(parameters, manifest):
            out += [b.info.name, *([b.flag] if b.flag else [])]
        out += self.numerator(parameters, manifest).columns
        f = self.filter_of(parameters, manifest)
        return list(dict.fromkeys(out + (list(f.columns) if f is not None else [])))

    def typed_columns(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                      ) -> list[str]:
        f = self.filter_of(parameters, manifest)
        return sorted({*(b.info.name for b in self.by_columns(parameters, manifest)),
                       *self.numerator(parameters, manifest).typed,
                       *(f.typed_columns if f is not None else ())})

    # -- the program -------------------------------------------------------------------

    async def _population(self, s: Session, inputs: Inputs, parameters: dict[str, Any],
                          filtered: bool) -> AShare | None:
        """0/1 shares of the population (None: every row): the present flags of the by
        columns and a boolean numerator, times the filter when ``filtered``."""
        manifest = inputs.manifest
        flags = [b.flag for b in self.by_columns(parameters, manifest) if b.flag]
        num = self.numerator(parameters, manifest)
        if num.flag:
            flags.append(num.flag)
        factors = [inputs.share(flag) for flag in dict.fromkeys(flags)]
        f = self.filter_of(parameters, manifest)
        if filtered and f is not None:
            factors.append(await evaluate(s, f, inputs.share, inputs.row_count))
        rows: AShare | None = None
        for factor in factors:  # few factors: one round each
            rows = factor if rows is None else await arith.mul(s, rows, factor)
        return rows

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]) -> QuerySet:
        """The population is the query set: each contributor >= min_subset_size, their
        number >= k; its complement is checked on the cells (:meth:`compute`)."""
        rows = await self._population(d.session, inputs, parameters, filtered=True)
        segment_rows = [count for _, count in inputs.segments]
        sizes: AShare | list[int] = segment_rows if rows is None else inputs.segment_sums(rows)
        query = await d.query_set(sizes, inputs.sites, inputs.row_count, complement=False,
                                  segment_rows=segment_rows)
        return dataclasses.replace(query, rows=rows)

    async def members(self, s: Session, inputs: Inputs, parameters: dict[str, Any],
                      rows: AShare | None) -> tuple[AShare, AShare]:
        """0/1 shares per row of the population ``rows`` (None: every row) and of its
        cases."""
        num = self.numerator(parameters, inputs.manifest)
        if num.case is not None:
            case = await evaluate(s, num.case, inputs.share, inputs.row_count)
        else:
            assert num.column is not None
            case = inputs.share(num.column.name)
        cases = case if rows is None else await arith.mul(s, case, rows)
        population = rows if rows is not None else public_share(
            s.party, np.ones(inputs.row_count, dtype=np.int64))
        return population, cases

    async def cell_sums(self, s: Session, inputs: Inputs, parameters: dict[str, Any],
                        weight: AShare) -> AShare:
        """Each contributor's sum of ``weight`` over each cell's rows, shape
        (contributors, cells)."""
        by = self.by_columns(parameters, inputs.manifest)
        return await packed_cell_sums(s, inputs, [inputs.share(b.info.name) for b in by],
                                      [len(b.levels) for b in by], weight)

    async def counts(self, s: Session, inputs: Inputs, parameters: dict[str, Any],
                     population: AShare, cases: AShare) -> tuple[AShare, AShare]:
        """Each contributor's denominator and numerator per cell, shapes (contributors,
        cells), from the 0/1 shares of :meth:`members`."""
        if max((count for _, count in inputs.segments), default=0) >= 1 << PACK_BITS:
            raise AnalysisError(f"{self.name}: a dataset of 2^{PACK_BITS} rows or more")
        weight = population + cases * (1 << PACK_BITS)
        return await unpack(s, await self.cell_sums(s, inputs, parameters, weight))

    async def cell_keys(self, s: Session, inputs: Inputs, parameters: dict[str, Any],
                        perturbation: Perturbation, population: AShare, cases: AShare
                        ) -> tuple[AShare, AShare]:
        """The cell keys of the denominators (the keys of the population's rows in each
        cell) and of the numerators (of its cases' rows): both weighed in one
        multiplication round, then summed per cell by one group-by with two weight
        vectors (64-bit sums, which cannot share the packed weight)."""
        rows = inputs.row_count
        both = await arith.mul(s, concat([population, cases]),
                               concat([perturbation.keys, perturbation.keys]))
        weights = AShare(s.party, both.a.reshape(2, rows).T.copy(),
                         both.b.reshape(2, rows).T.copy())  # (rows, 2)
        keys = (await self.cell_sums(s, inputs, parameters, weights)).sum(axis=0)
        return keys[0], keys[1]

    def cell_labels(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                    ) -> tuple[list[list[str]], list[str], list[str], list[str]]:
        """Per cell: its levels, and the ledger names of its denominator, numerator and
        non-cases."""
        by = self.by_columns(parameters, manifest)
        num = self.numerator(parameters, manifest)
        levels = [list(combo) for combo in product(*(b.levels for b in by))]
        population = [" & ".join(f"{b.info.name}={v}" for b, v in zip(by, combo, strict=True))
                      or "*" for combo in levels]
        if num.flag:
            population = [f"{p} & {num.flag}" for p in population]
        yes, no = ((f"{num.name}=true", f"{num.name}=false") if num.case is None
                   else (num.name, f"!{num.name}"))
        den = [self.cell(p, parameters, manifest) for p in population]
        cases = [self.cell(f"{p} & {yes}", parameters, manifest) for p in population]
        others = [self.cell(f"{p} & {no}", parameters, manifest) for p in population]
        return levels, den, cases, others

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        k = d.rules.min_cell_count
        s = d.session
        by = self.by_columns(parameters, inputs.manifest)
        shape = [len(b.levels) for b in by]
        levels, den_names, num_names, other_names = self.cell_labels(parameters,
                                                                      inputs.manifest)
        population, cases = await self.members(s, inputs, parameters, query.rows)
        den_per, num_per = await self.counts(s, inputs, parameters, population, cases)
        other_per = den_per - num_per
        den, num, other = den_per.sum(axis=0), num_per.sum(axis=0), other_per.sum(axis=0)
        cells = len(levels)
        _, gate = await d.cell_gates("denominators", den_names, den, den_per)
        safe = await d.safe_residuals("numerators; non-cases", concat([num, other]))
        gate = gate.narrowed("numerator and non-cases 0 or >= k",
                             safe.allowed[:cells] & safe.allowed[cells:])
        if d.ledger is not None:
            for name, names, per in (("numerators", num_names, num_per),
                                     ("non-cases", other_names, other_per)):
                exposed = await d.ledger_gates(name, names, per)
                gate = gate.narrowed(f"{name} not exposed by the release ledger",
                                     exposed.allowed)
        if "filter" in parameters:
            unfiltered = await self._population(s, inputs, parameters, filtered=False)
            all_den, all_num = await self.counts(
                s, inputs, parameters, *await self.members(s, inputs, parameters, unfiltered))
            a_den, a_num = all_den.sum(axis=0), all_num.sum(axis=0)
            dropped = await d.safe_residuals(
                "rows of each cell that fail the filter (all, cases, non-cases)",
                concat([a_den - den, a_num - num, (a_den - a_num) - other]))
            keep = dropped.allowed.reshape(3, cells).all(axis=0)
            gate = gate.narrowed("the filter's complement per cell", keep)
        gate = await self._secondary(d, shape, (den, num, other), gate,
                                         inputs.row_count)
        sizes = np.array([count for _, count in inputs.segments], dtype=np.int64)
        missing = self.cell(missing_cell(" & ".join(b.info.name for b in by) or "*"),
                            parameters, inputs.manifest)
        while gate.all():
            absent = (-den_per.sum(axis=1)).add_public(sizes)
            if not await d.exposes(missing, absent):
                d.record([missing], absent.reshape(len(sizes), 1), [True])
                break
            keep = np.ones(cells, dtype=np.bool_)
            keep[0] = False
            gate = gate.narrowed("so that no number of missing values follows", keep)
            gate = await self._secondary(d, shape, (den, num, other), gate,
                                         inputs.row_count)
        opened = gate.allowed.tolist()
        d.record(den_names + num_names + other_names,
                 concat([den_per, num_per, other_per], axis=1), opened * 3)
        perturbation = Perturbation.of(d, inputs.record_keys)
        extra: dict[str, Any] = {}
        if perturbation is None:
            dens = await d.open("denominators", den, gate)
            nums = await d.open("numerators", num, gate)
        else:
            den_keys, num_keys = await self.cell_keys(s, inputs, parameters, perturbation,
                                                      population, cases)
            if query.rows is None and not by:  # public: the versions' row count
                dens = await d.open("denominators", den, gate)
            else:
                dens = await perturbation.open(d, "denominators", den, den_keys, gate)
            nums = await perturbation.open(d, "numerators", num, num_keys, gate)
            extra = {"perturbed": perturbation.as_json()}
        out = [shown_cell(combo, dv, xv) for combo, dv, xv in zip(levels, dens, nums,
                                                                   strict=True)]
        return {"by": [b.info.name for b in by], "cells": out, "min_cell_count": k,
                "ci_method": "wilson", "ci_level": CI_LEVEL, **extra}

    async def _secondary(self, d: Disclosure, shape: Sequence[int],
                         sums: tuple[AShare, AShare, AShare], gate: Gate,
                         rows: int) -> Gate:
        """Hide cells until every line and the whole table pass (see the module doc).

        Per quantity q (d, x, d - x) each line's hidden cells not yet known are U, their
        sum M. M = 0 makes all of U known (zero, and for d: x and d - x too; with two or
        more columns, d's M = 0 in a line with opened cells hides one more). Otherwise
        the line passes when |U| >= 2, M >= k and M != |U| (k - 1) (every cell at k - 1).
        A line with opened cells that fails hides one more cell; a line without opened
        cells cannot, so its U counts as known in the other lines from then on. Rounds
        repeat until nothing changes; each opens four bits per (line, quantity) checked,
        [M >= 1], [M >= k], [M >= |U| (k - 1)], [M >= |U| (k - 1) + 1], and two for the
        rows not in an opened cell of the whole table."""
        k = d.rules.min_cell_count
        quantities = sums
        lines = [line for _, line in line_cells(shape)] if shape else []
        everything = list(range(int(np.prod(shape, dtype=np.int64))))
        lines.append(everything)  # the whole table, last
        table = len(lines) - 1
        crossing: dict[int, list[int]] = {}
        for at, line in enumerate(lines):
            for x in line:
                crossing.setdefault(x, []).append(at)
        known: list[set[int]] = [set(), set(), set()]
        passed: set[tuple[int, int, frozenset[int]]] = set()
        while True:
            allowed = gate.allowed
            if not allowed.any():
                return gate
            shown = allowed.tolist()  # Python bools: the loops below index it per cell
            checks: list[tuple[int, int, list[int]]] = []  # (line, quantity, U)
            tests: list[list[int]] = []
            for at, line in enumerate(lines):
                for q in range(3):
                    unknown = [x for x in line if not shown[x] and x not in known[q]]
                    if not unknown or (at, q, frozenset(unknown)) in passed:
                        continue
                    top = len(unknown) * (k - 1)
                    checks.append((at, q, unknown))
                    tests.append([1, k, top, top + 1])
            unopened = (-1, 0, frozenset(int(x) for x in np.flatnonzero(allowed)))
            check_unopened = unopened not in passed
            if check_unopened:
                tests.append([1, k])
            if not tests:
                return gate
            # every sum at once (local): each check's cells of the stacked counts, summed
            # per check by one reduceat (sums of shares wrap mod 2^64 like the counts)
            cells = len(everything)
            stacked = concat(list(quantities))
            picks = np.concatenate([q * cells + np.array(unknown, dtype=np.int64)
                                    for _, q, unknown in checks] or [np.zeros(0, np.int64)])
            starts = np.cumsum([0, *(len(unknown) for _, _, unknown in checks)])[:-1]
            offset = np.zeros(len(tests), dtype=np.int64)
            if check_unopened:
                offset[-1] = rows
            opened_cells = np.flatnonzero(allowed) if check_unopened else None
            masses = AShare(
                d.session.party,
                _check_sums(stacked.a, picks, starts, len(tests), opened_cells),
                _check_sums(stacked.b, picks, starts, len(tests), opened_cells),
            ).add_public(offset)
            repeat = np.array([len(ts) for ts in tests], dtype=np.int64)
            shift = np.array([k - t for ts in tests for t in ts], dtype=np.int64)
            wide = AShare(d.session.party, np.repeat(masses.a, repeat),
                          np.repeat(masses.b, repeat)).add_public(shift)
            bits = (await d.at_least("hidden sums along the lines (their range)", wide)
                    ).allowed
            got: list[list[bool]] = []
            pos = 0
            for ts in tests:
                got.append([bool(b) for b in bits[pos:pos + len(ts)]])
                pos += len(ts)
            needs: list[int] = []
            grew = False
            for (at, q, unknown), g in zip(checks, got, strict=False):
                opens = any(shown[x] for x in lines[at])
                if not g[0] and q == 0 and opens and at != table and len(shape) >= 2:
                    needs.append(at)  # empty hidden cells next to opened ones: hide more
                    continue
                if not g[0]:  # M = 0: every unknown hidden cell is empty
                    for r in ((0, 1, 2) if q == 0 else (q,)):
                        grew |= not set(unknown) <= known[r]
                        known[r].update(unknown)
                    passed.add((at, q, frozenset(unknown)))
                    continue
                if len(unknown) >= 2 and g[1] and (not g[2] or g[3]):
                    passed.add((at, q, frozenset(unknown)))
                    continue
                if opens:
                    needs.append(at)
                else:
                    grew |= not set(unknown) <= known[q]
                    known[q].update(unknown)
            if len(got) > len(checks):
                rest = got[-1]
                if not rest[0] or rest[1]:
                    passed.add(unopened)
                else:
                    needs.append(table)
            if not needs:
                if grew:
                    continue
                return gate
            hide: set[int] = set()
            for at in dict.fromkeys(needs):
                line = lines[at]
                if hide & set(line):
                    continue
                candidates = [x for x in line if shown[x]]
                best = max(candidates, key=lambda x: (
                    sum(not shown[y] for c in crossing.get(x, []) if c not in (at, table)
                        for y in lines[c]), -x))
                hide.add(best)
            keep = np.ones(len(allowed), dtype=np.bool_)
            keep[list(hide)] = False
            gate = gate.narrowed("secondary suppression", keep)
