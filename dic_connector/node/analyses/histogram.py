"""``histogram`` v1: counts of a numeric or date column over given breaks, each cell checked.

**Bins** (as ``numpy.histogram``, which the tests compare against): breaks b_0 < b_1 < ...
< b_m give m bins. With ``"right": false`` (the default) bin i is [b_i, b_(i+1)) and the
last bin [b_(m-1), b_m] is closed; with ``"right": true`` bin i is (b_i, b_(i+1)] and the
first [b_0, b_1] is closed (R's ``hist(..., right = TRUE, include.lowest = TRUE)``). Values
below b_0 and above b_m are counted in two more cells, ``below`` and ``above``, which are
checked and opened like any bin (not folded into the outer bins). The rows counted are the
query set: where the column is present and the ``filter`` (if any) holds.

**Under MPC** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). Values are
encoded integers x = value * 10^scale, so every bin edge is one integer threshold t:
[x >= b] = [x >= ceil(b 10^s)] and [x > b] = [x >= floor(b 10^s) + 1]. The thresholds
t_0 <= ... <= t_m are t_0 from b_0 and t_m from b_m with the closed ends above, so
G_j = #{x >= t_j} gives below = n - G_0, bin i = G_i - G_(i+1), above = G_m: one
comparison per break per row, all in one batched sign-bit circuit
(:func:`mpc.protocols.compare.sign_bits`, ABY3 §5.3), injected to arithmetic shares
(1 round) and summed over the query set per contributor by one dot product round (ABY3
§5.1). With a declared range [lo, hi] the thresholds are clipped to [lo, hi + 1] (which
changes no comparison of a value in range) and the circuit runs on just enough bits for
x - t; without one, 64 bits and the sign of x joins in ([x < c] = msb(x) | msb(x - c) for
c >= 0, msb(x) & msb(x - c) for c < 0; one AND round more), exact for every 64-bit x, as
in :mod:`.filters`. Rows are processed in chunks of about :data:`CHUNK_ELEMENTS`
comparisons.

**Disclosure control** (:mod:`.disclosure`), every check under MPC opening only its bits:

1. The query set, as every recipe that opens n (:meth:`.base.Analysis.gate`): each
   contributing dataset version >= min_subset_size rows, n >= k, the rows outside it 0 or
   >= k (with a filter, the present rows it drops and the passing rows that lack the
   column, too). n is then **opened** (a ``count`` with the same filter opens it anyway).
2. **Primary suppression**: [c >= k] per cell (bins, below, above), with the release
   ledger also every sum of the cell over contributors that earlier releases make
   derivable (:meth:`.disclosure.Disclosure.cell_gates`). A cell below k, zero included,
   is never opened. With a filter, the same histogram without it gives per cell the present
   rows that fail the filter: each such count must be 0 or >= k, else the cell is hidden
   too, as in :mod:`.frequency`.
3. **Secondary suppression.** n is open, so the sum M of the h hidden cells is known
   (n minus the opened cells). With s of them >= k (shown ``"suppressed"``) and the others
   below k (``"<k"``), M leaves none of them determined iff M = 0 (every hidden cell is
   empty, which a frequency table discloses as well), or s = 0 and k <= M < h (k - 1)
   (below k, M is itself a small count; at h (k - 1) every cell is k - 1), or s >= 1,
   h >= 2 and M >= s k + 1 (at s k the large cells are exactly k and the small ones 0).
   The check opens three bits ([M >= 1], [M >= k], [M >= h (k - 1)]) or one
   ([M >= s k + 1]), by :meth:`~.disclosure.Disclosure.at_least`; while it fails, the
   smallest opened cell is hidden too (a tournament minimum; which cells equal it is opened to the nodes). When no
   cell is left open, nothing more can be hidden and only n is shown, with every cell's
   reason ``"hidden"``: the '<k' / 'suppressed' labels would bound the cells, and with n
   they could pin them (every cell below k and n = h (k - 1): each is k - 1).

**Perturbation** (a deployment setting or a data owner's policy, off by default;
:mod:`.perturbation`): every check above is made on the true counts (the secondary
suppression against the true n), exactly as without it; then each allowed cell opens as
c + v, v the cell-key noise of the cell's rows, and the result says ``"perturbed"``. A
cell's key is the sum of its rows' record keys: the keys weighed by the query set (one
multiplication round) join the threshold sums as one more weight vector (the same dot
product round), so K_j = sum of the keys of the rows with x >= t_j, and below, the bins
and above are the same differences of K as of G. **n is treated as ``count`` treats it**:
a query-set size opens as n + v with its rows' cell key, so the same request to ``count``
shows the same n + v and neither undoes the other's noise; a public n (no missing values,
no filter: the versions' row counts) is shown exact, as ``count`` shows it. The shown n is
then not the sum of the shown cells (each has its own noise).

Not checked: differencing two histograms of the same rows whose breaks differ (their
cells are different ledger cells), e.g. [0, 10) and [0, 11) give the count of [10, 11);
and, across releases, n minus the opened cells of one site's histogram after the pooled
one (the ledger checks each cell's sums over contributors, not sums of cells).

Result (fixed, plotting code relies on it): ``{"column", "breaks": [float, ...], "counts":
[int | null, ...] (m bins, null = suppressed), "below": int | null, "above": int | null,
"n": int, "min_cell_count": k, "suppressed_reasons": {cell: "<k" | "suppressed"}}``, the
last only when a cell is hidden, keyed ``"counts[i]"``, ``"below"``, ``"above"``
(``"hidden"`` for every cell when none is opened); with
perturbation also ``"perturbed": {"method": "cellkey", "D", "V", "js"}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
)
from dic_connector.node.analyses.count import open_n
from dic_connector.node.analyses.disclosure import (
    Disclosure,
    Gate,
    QuerySet,
    public_share,
    suppressed,
)
from dic_connector.node.analyses.filters import DECIMAL_TEXT, MAX_CONSTANT
from dic_connector.node.analyses.frequency import HIDDEN, SECONDARY
from dic_connector.node.analyses.manifest import ColumnInfo, present_column
from dic_connector.node.analyses.perturbation import PERTURBATION_DISCLOSES, Perturbation
from mpc.protocols import arith, bits, boolean, compare
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Most bins of one histogram (breaks: at most MAX_BINS + 1).
MAX_BINS = 100
#: Comparisons (thresholds x rows) per chunk: bounds message sizes and memory.
CHUNK_ELEMENTS = 1 << 21

_BREAK = {"oneOf": [{"type": "number"},
                    {"type": "string", "pattern": DECIMAL_TEXT.pattern}]}


def parse_breaks(recipe: str, breaks: Sequence[Any]) -> list[Decimal]:
    """The breaks as exact decimals, checked finite and strictly increasing."""
    out: list[Decimal] = []
    for i, value in enumerate(breaks):
        try:
            number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
        except (InvalidOperation, TypeError, ValueError):
            number = Decimal("nan")
        if isinstance(value, bool) or not number.is_finite():
            raise AnalysisError(f"{recipe}: parameter 'breaks/{i}': {value!r} is not a "
                                "finite number")
        if out and number <= out[-1]:
            raise AnalysisError(f"{recipe}: parameter 'breaks': must be strictly "
                                f"increasing; {value} follows {out[-1]}")
        out.append(number)
    return out


def thresholds(breaks: Sequence[Decimal], scale: int, right: bool) -> list[int]:
    """The encoded integers t_0..t_m with G_j = #{x >= t_j} (see the module doc): an edge
    b that a bin includes from above is [x >= ceil(b 10^s)], one it excludes
    [x >= floor(b 10^s) + 1]."""
    out = []
    last = len(breaks) - 1
    for j, b in enumerate(breaks):
        scaled = b.scaleb(scale)
        # x >= b: the lower edge of every bin when right is false, and the first edge always
        inclusive = (j == 0) if right else (j < last)
        if inclusive:
            out.append(int(scaled.to_integral_value(rounding=ROUND_CEILING)))
        else:
            out.append(int(scaled.to_integral_value(rounding=ROUND_FLOOR)) + 1)
    return out


def _interval(column: str, low: Decimal, high: Decimal, closed_low: bool,
              closed_high: bool) -> str:
    return (f"{column} in {'[' if closed_low else '('}{low}, {high}"
            f"{']' if closed_high else ')'}")


def cell_names(column: str, breaks: Sequence[Decimal], right: bool) -> list[str]:
    """Ledger names of the cells, in the order below, bins..., above."""
    m = len(breaks) - 1
    bins = [_interval(column, breaks[i], breaks[i + 1],
                      closed_low=not right or i == 0, closed_high=right or i == m - 1)
            for i in range(m)]
    return [f"{column} < {breaks[0]}", *bins, f"{column} > {breaks[-1]}"]


async def at_least_bits(s: Session, x: AShare, t: Sequence[int],
                        bounds: tuple[int | None, int | None]) -> AShare:
    """Arithmetic 0/1 shares of [x_r >= t_j], shape (len(t), rows): one sign-bit circuit,
    one AND round more without a declared range, one injection round."""
    rows = x.shape[0]
    low, high = bounds
    shape = (len(t), rows)
    if low is not None and high is not None:
        clipped = [min(max(c, low), high + 1) for c in t]
        width = min(64, max(2, (high - low + 1).bit_length() + 1))
        wide = width == 64 and (high - low + 1) >= 1 << 63
    else:
        clipped, width, wide = list(t), 64, True
    xs = AShare(x.party, np.broadcast_to(x.a, shape), np.broadcast_to(x.b, shape))
    diff = xs - np.array(clipped, dtype=np.int64).reshape(-1, 1)
    if not wide:
        below = await compare.sign_bits(s, diff, width)
        return await bits.inject(s, below ^ 1)
    signs = await compare.sign_bits(s, concat([diff.reshape(-1), x]), 64)
    msb_diff = signs[:len(t) * rows].reshape(*shape)
    msb_x = signs[len(t) * rows:]
    sign = boolean.BShare(x.party, np.broadcast_to(msb_x.a, shape).copy(),
                          np.broadcast_to(msb_x.b, shape).copy())
    both = await boolean.and_(s, msb_diff, sign)
    positive = np.array([c >= 0 for c in clipped], dtype=np.bool_).reshape(-1, 1)
    # [x < c] = msb(x) | msb(x - c) = a ^ b ^ ab for c >= 0; msb(x) & msb(x - c) for c < 0
    either = msb_diff ^ sign ^ both
    below = boolean.BShare(x.party, np.where(positive, either.a, both.a),
                           np.where(positive, either.b, both.b))
    return await bits.inject(s, below ^ 1)


async def threshold_counts(s: Session, inputs: Inputs, x: AShare, t: Sequence[int],
                           bounds: tuple[int | None, int | None],
                           weights: Sequence[AShare | None]) -> list[AShare]:
    """Per weight vector w (0/1 shares per row; None: every row), each contributor's
    sum_r w_r [x_r >= t_j], shape (contributors, thresholds): one comparison per threshold
    per row, one dot product round for all weights, per chunk of rows."""
    per_chunk = max(1, CHUNK_ELEMENTS // max(1, len(t)))
    sums: list[list[AShare]] = [[] for _ in weights]
    start = 0
    for _, count in inputs.segments:
        totals: list[AShare | None] = [None] * len(weights)
        for lo in range(start, start + count, per_chunk):
            hi = min(start + count, lo + per_chunk)
            ge = await at_least_bits(s, x[lo:hi], t, bounds)
            shared = [w for w in weights if w is not None]
            dotted: list[AShare] = []
            if shared:
                xs = AShare(s.party, np.tile(ge.a, (len(shared), 1)),
                            np.tile(ge.b, (len(shared), 1)))
                ws = AShare(s.party, np.repeat(np.stack([w.a[lo:hi] for w in shared]),
                                               len(t), axis=0),
                            np.repeat(np.stack([w.b[lo:hi] for w in shared]), len(t), axis=0))
                got = await arith.dot(s, xs, ws)
                dotted = [got[i * len(t):(i + 1) * len(t)] for i in range(len(shared))]
            at = 0
            for i, w in enumerate(weights):
                if w is None:
                    part = ge.sum(axis=1)
                else:
                    part, at = dotted[at], at + 1
                current = totals[i]
                totals[i] = part if current is None else current + part
        for i, total in enumerate(totals):
            zero = np.zeros(len(t), dtype=np.uint64)
            sums[i].append(total if total is not None else AShare(s.party, zero, zero.copy()))
        start += count
    return [concat([p.reshape(1, len(t)) for p in parts], axis=0) for parts in sums]


def cells_from(g: AShare, n: AShare) -> AShare:
    """Cells below, bins..., above from the threshold counts G (..., m + 1) and the query
    set sizes n (...,) (local)."""
    below = (n - g[..., 0]).reshape(*g.shape[:-1], 1)
    bins = g[..., :-1] - g[..., 1:]
    above = g[..., -1:]
    return concat([below, bins, above], axis=len(g.shape) - 1)


class Histogram(Analysis):
    name: ClassVar[str] = "histogram"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Histogram of a numeric or date column over given breaks (bins [b_i, b_i+1), the "
        "last closed, as numpy.histogram; or (b_i, b_i+1] with right), with the counts "
        "below and above the breaks, pooled over the pinned datasets; each count suppressed "
        "below min_cell_count, with secondary suppression against the opened n.")
    discloses: ClassVar[str] = (
        QUERY_SET_GATE
        + "Then n, to the three nodes and then to the researcher. For each cell (every bin, "
        "the values below the first break and those above the last), one bit, whether its "
        "count is >= k; with a filter, one bit per cell more, whether the present rows of "
        "the cell that fail the filter are 0 or >= k; with the release ledger, one bit per "
        "sum of a cell over contributors that earlier releases make derivable. Then, for "
        "secondary suppression, one to three bits, whether the hidden cells' sum (n minus the "
        "opened cells) lies in a range that leaves them undetermined (see the recipe); if not, which of the opened "
        "counts equal their minimum, and the first is hidden too; repeated until it does. "
        "Then exactly the counts still allowed, to the three nodes and then to the "
        "researcher. Counts below k, zero included, are never opened ('<k'); a count hidden "
        "only to protect them shows 'suppressed'; when no count is opened, every one shows "
        "'hidden' (no bound that n could pin). The comparisons of each value with the "
        "breaks are computed under MPC and never opened." + FILTER_DISCLOSES
        + PERTURBATION_DISCLOSES + " So is n, with the cell key of the query set's rows "
        "(as count opens it), unless it is the public row count, which is shown as it is.")
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "column": {"type": "string", "minLength": 1,
                       "description": "a numeric or date typed column (dates in their unit, "
                                      "days since the origin)"},
            "breaks": {"type": "array", "minItems": 2, "maxItems": MAX_BINS + 1,
                       "items": _BREAK,
                       "description": "strictly increasing bin edges in the column's unit "
                                      "(numbers, or decimal strings such as \"80.5\")"},
            "right": {"type": "boolean",
                      "description": "bins (b_i, b_i+1] with the first closed, instead of "
                                     "[b_i, b_i+1) with the last closed (default false)"},
        },
        "required": ["column", "breaks"],
        "additionalProperties": False,
    }

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        super().validate(parameters, manifest)
        info = self.typed_column(parameters, manifest)
        breaks = parse_breaks(self.name, parameters["breaks"])
        for i, b in enumerate(breaks):
            if abs(b.scaleb(info.scale)) >= MAX_CONSTANT:
                raise AnalysisError(f"{self.name}: parameter 'breaks/{i}': {b} is too large "
                                    f"for '{info.name}' at scale {info.scale}")

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int]:
        bins = len(parameters["breaks"]) - 1
        return f"the histogram ({bins} bins, 'below' and 'above')", bins + 2

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        k = d.rules.min_cell_count
        s = d.session
        info = self.typed_column(parameters, inputs.manifest)
        breaks = parse_breaks(self.name, parameters["breaks"])
        right = bool(parameters.get("right", False))
        perturbation = Perturbation.of(d, inputs.record_keys)
        shown_n = await open_n(d, inputs, self.rows_in(d, inputs, query), query)
        n = shown_n["n"]
        t = thresholds(breaks, info.scale, right)
        filtered = "filter" in parameters
        flag = present_column(inputs.manifest, info.name)
        present = inputs.share(flag) if flag is not None else None
        weights: list[AShare | None] = [query.rows] + ([present] if filtered else [])
        keyed: AShare | None = None  # the keys of the query set's rows, weighed alike
        if perturbation is not None:
            keyed = await perturbation.row_keys(s, query.rows)
            weights.append(keyed)
        g = await threshold_counts(s, inputs, inputs.share(info.name), t,
                                   info.encoded_bounds(), weights)
        sizes = np.array([count for _, count in inputs.segments], dtype=np.int64)

        def totals(w: AShare | None) -> AShare:
            return public_share(s.party, sizes) if w is None else inputs.segment_sums(w)

        per = cells_from(g[0], totals(query.rows))
        counts = per.sum(axis=0)
        names = [self.cell(c, parameters, inputs.manifest)
                 for c in cell_names(info.name, breaks, right)]
        primary, gate = await d.cell_gates("histogram cells", names, counts, per)
        if filtered:
            unfiltered = cells_from(g[1], totals(present)).sum(axis=0)
            safe = await d.safe_residuals("present rows of each cell that fail the filter",
                                          unfiltered - counts)
            gate = gate.narrowed("the filter's complement per cell", safe.allowed)
        # the width of the tournament minimum: n when it is exact, else its public bound
        bound = n if perturbation is None or query.rows is None else inputs.row_count
        gate = await self._secondary(d, counts, primary, gate, bound)
        d.record(names, per, gate.allowed.tolist())
        extra: dict[str, Any] = {}
        if perturbation is None or keyed is None:
            opened = await d.open("histogram cells", counts, gate)
        else:  # a cell's key: the sum of its rows' keys, from the same threshold sums
            keys = cells_from(g[-1], inputs.segment_sums(keyed)).sum(axis=0)
            opened = await perturbation.open(d, "histogram cells", counts, keys, gate)
            extra = {"perturbed": perturbation.as_json()}
        reasons: dict[str, str] = {}
        labels = ["below", *(f"counts[{i}]" for i in range(len(breaks) - 1)), "above"]
        shown_any = any(value is not None for value in opened)
        for label, value, large in zip(labels, opened, primary.allowed, strict=True):
            if value is None:
                # no cell open: no bound either, or n would pin them (all '<k' and
                # n = cells x (k - 1): every one is k - 1)
                reasons[label] = (SECONDARY if large else suppressed(k)) if shown_any \
                    else HIDDEN
        out: dict[str, Any] = {
            "column": info.name, "breaks": [float(b) for b in breaks],
            "counts": opened[1:-1], "below": opened[0], "above": opened[-1], "n": n,
            "min_cell_count": k}
        if reasons:
            out["suppressed_reasons"] = reasons
        return {**out, **extra}

    @staticmethod
    async def _secondary(d: Disclosure, counts: AShare, primary: Gate, gate: Gate,
                         bound: int) -> Gate:
        """Hide the smallest opened cell until the hidden cells' sum M = n - (opened cells)
        determines none of them (see the module doc); every count is at most ``bound``."""
        k = d.rules.min_cell_count
        while gate.allowed.any():
            hidden = np.flatnonzero(~gate.allowed)
            if hidden.size == 0:
                return gate
            large = int(primary.allowed[hidden].sum())
            mass = counts[hidden].sum().reshape(1)
            if large == 0:
                # 0 < M < k is a small count; M >= h (k - 1) pins every cell at k - 1
                top = hidden.size * (k - 1)
                got = (await d.at_least("the hidden cells' sum (its range)",
                                        concat([mass + (k - 1), mass,
                                                mass + (k - top)]))).allowed
                safe = not got[0] or (bool(got[1]) and not got[2])
            elif hidden.size >= 2:
                bound = large * k + 1
                safe = (await d.at_least(f"the hidden cells' sum - {bound - k}",
                                         mass + (k - bound))).all()
            else:
                safe = False  # one hidden cell >= k: n minus the opened cells is its count
            if safe:
                return gate
            j = await d.smallest("opened histogram cells", counts, gate,
                                 max(1, bound).bit_length())
            keep = np.ones(len(gate), dtype=np.bool_)
            keep[j] = False
            gate = gate.narrowed("secondary suppression", keep)
        return gate

