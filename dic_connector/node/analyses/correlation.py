"""``correlation`` v1: Pearson's r (or Spearman's rho) of two numeric or date columns, n, p.

Pearson (1895); as ``scipy.stats.pearsonr(x, y, alternative=...)`` over the rows where both
columns are present and the request's ``"filter"`` holds. With the fixed-point integers
u = x 10^s, v = y 10^s' over those n rows and their sums Sx, Sy, Sxx, Syy, Sxy,

    C = n Sxy - Sx Sy,   A = n Sxx - Sx^2,   B = n Syy - Sy^2,   r = C / sqrt(A B)

(the scales cancel). p follows from the exact distribution of r under independent normal
data, a beta distribution on [-1, 1] with a = b = n/2 - 1, which is that of t = r sqrt((n -
2) / (1 - r^2)) with n - 2 degrees of freedom (two-sided, ``less``, ``greater``); with n =
2, r = +-1 and p = 1, as scipy. All in plaintext.

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). The query set
is the rows where x is present, y is present and the filter holds (the base template's
gate with ``is_present(y)`` joined to the filter, so its complements cover the rows where
only one of them is present). Under MPC: u r_i and v r_i with the query set's 0/1 shares
(one multiplication round), then the products u u, v v, u v (one round) and their sums
(local), then n Sxx, Sx Sx, n Syy, Sy Sy, n Sxy, Sx Sy (one round): A, B and C are shares
computed without opening n, Sx, Sy, Sxx, Syy or Sxy.

**What opens**: the gate bits, the range bit (below), n, and the three values C, A and B,
to the three nodes and then to the researcher, who gets n, r, t and p. Given n, A / (n (n -
1)) and B / (n (n - 1)) are the two sample variances (what ``summary`` opens of either
column) and C / (n (n - 1)) the sample covariance; the means (Sx, Sy) are not opened.

**Overflow.** Ring arithmetic is exact modulo 2^64, so the intermediate products may wrap;
only A, B and C must lie in the signed range. With every value in a range of width w over
n <= N rows, A = n sum (u - mean)^2 <= n^2 w^2 / 4 (Popoviciu) and |C| <= sqrt(A B), so
N w <= isqrt(2^65 - 4) keeps them below 2^63 (:func:`spread_bound`). A declared
``minimum``/``maximum`` of width within that bound rules overflow out; otherwise every
value of both columns is checked under MPC to lie in [-h, h], h = spread_bound(N) // 2,
and only the all-in-range bit is opened; a value outside is a
:class:`~dic_connector.errors.DataValidationError` and nothing else is opened. For N = 48
rows, h = 63,270,843 encoded; for N = 10^5, h = 30,370 (e.g. |x| <= 303.70 at scale 2):
larger columns need a declared range (age in [0, 120] at scale 0 fits up to 5 10^7 rows).

**Spearman** (``"method": "spearman"``; Spearman 1904, as ``scipy.stats.spearmanr``):
Pearson's r of the mid-ranks (ties get the average of their positions), with the same p
(scipy's t with n - 2 df equals the beta form above; with n = 2, p = 1 as pearsonr rather
than scipy's nan). Under MPC: rows outside the query set get the key high + 1 (one
multiplication round), both columns are checked to lie in a sort key's range unless the
declared ranges fit (one bit each), the rows are sorted by x with y and the membership as
payload (shuffle-then-sort, :func:`mpc.protocols.sort.sort`, whose comparison bits are
data-independent), the runs of equal keys are found by one equality circuit, and each
row's doubled mid-rank a + b + 2 (its run at positions a..b) comes from two segmented
broadcasts (:func:`mpc.protocols.scan.broadcast_from_starts`, positions forwards and
backwards); the same again sorted by y with x's ranks as payload; the ranks are times the
membership, and C, A, B are computed from them as above. The query set's rows come first
in both sorts, so the ranks are over the query set alone. What opens besides the gate and
range bits: the sorts' comparison bits, n and C, A, B **of the ranks**; A and B, with n,
tell the sum of t^3 - t over the runs of ties of each column (the tie correction of the
rank variance), not which values tie. Doubled ranks are at most 2 N, so at most
:data:`MAX_SPEARMAN_ROWS` rows (N = 2^15) are taken; more are refused before anything is
computed.

Result: ``{"columns": [x, y], "method", "alternative", "n", "r", "t", "df", "p"}``; ``r``, ``t`` and
``p`` are null with a ``"reason"`` when a column is constant over the query set (A or B
is 0: r is undefined; scipy gives nan); ``t`` is null where |r| = 1. Refused:
``{"suppressed": true, "reason": ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.base import (
    ALTERNATIVES,
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    SORT_MEMORY_PER_ROW,
    Analysis,
    Inputs,
    named_column,
    present_query,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release, public_share
from dic_connector.node.analyses.filters import referenced_columns
from dic_connector.node.analyses.manifest import ColumnInfo, present_column
from dic_connector.node.analyses.median import key_range
from dic_connector.node.analyses.ttest import p_value
from mpc.protocols import arith, compare, scan, sort
from mpc.session import Session
from mpc.sharing import AShare, concat

#: What ``"method"`` may ask for.
METHODS = ("pearson", "spearman")
#: Most rows (all pinned versions) Spearman's rho takes: C, A, B of doubled mid-ranks <= 2 N
#: stay inside the ring while N 2N <= isqrt(2^65 - 4).
MAX_SPEARMAN_ROWS = 1 << 15

#: The bound of the module doc: N w <= isqrt(2^65 - 4) keeps A, B and |C| below 2^63.
SPREAD_LIMIT = math.isqrt((1 << 65) - 4)


def spread_bound(rows: int) -> int:
    """The widest range of encoded values for which A, B and C over ``rows`` rows stay
    inside the signed ring."""
    return SPREAD_LIMIT // max(rows, 1)


def range_rules_out_overflow(info: ColumnInfo, rows: int) -> bool:
    """Whether the declared range alone keeps A, B and C inside the ring."""
    low, high = info.encoded_bounds()
    return low is not None and high is not None and high - low <= spread_bound(rows)


async def spread_checked(d: Disclosure, inputs: Inputs, infos: Sequence[ColumnInfo],
                         unchecked: Sequence[int], analysis: str, joiner: str = " and "
                         ) -> list[AShare]:
    """The columns' shares, after checking that every value of the ``unchecked`` ones lies
    in [-h, h], h = spread_bound(rows) // 2 (one bit opened): where the declared ranges do
    not rule out an overflow of the centred sums (this module's doc; ``linear_regression``
    uses it too). A value outside is a :class:`DataValidationError` and nothing else opens."""
    rows = inputs.row_count
    shares = [inputs.share(info.name) for info in infos]
    if unchecked:
        half = spread_bound(rows) // 2
        names = joiner.join(f"'{infos[i].name}'" for i in unchecked)
        values = concat([shares[i] for i in unchecked])
        if not await d.all_within(f"{names} value", values, -half, half):
            several = len(unchecked) > 1
            whose = "the columns' minima and maxima" if several else \
                "the column's minimum and maximum"
            raise DataValidationError(
                f"{analysis}: column {names} {'hold' if several else 'holds'} a value outside "
                f"[-{half}, {half}] (encoded), in which the centred sums over {rows} rows "
                f"cannot overflow; declare {whose}")
    return shares


def pearson(n: int, c: int, a: int, b: int, alternative: str) -> dict[str, Any]:
    """r, t, df and p from the exact integers n, C, A, B (module doc)."""
    out: dict[str, Any] = {"n": n, "r": None, "t": None, "df": n - 2, "p": None}
    if a == 0 or b == 0:
        return out | {"reason": "a column is constant over the query set: r is undefined"}
    r = max(-1.0, min(1.0, c / (math.sqrt(a) * math.sqrt(b))))
    if n == 2:
        return out | {"r": math.copysign(1.0, r), "p": 1.0}
    if c * c == a * b:
        r = math.copysign(1.0, r)
    t = None if abs(r) == 1.0 else r * math.sqrt((n - 2) / (1 - r * r))
    half = n / 2 - 1
    # deferred: scipy.stats takes seconds to import
    from scipy import stats
    distribution = stats.beta(half, half, loc=-1, scale=2)
    return out | {"r": r, "t": t, "p": p_value(r, distribution, alternative)}


class Correlation(Analysis):
    name: ClassVar[str] = "correlation"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Pearson's correlation r of two numeric or date columns with n and its p-value, "
        "pooled over the pinned datasets, over the rows where both are present."
    )
    discloses: ClassVar[str] = QUERY_SET_GATE.replace(
        "where the column is present", "where both columns are present"
    ) + (
        "Otherwise, if the manifest declares no ranges that rule out an overflow: one bit, "
        "whether every value of both columns lies in the range in which C, A and B cannot "
        "overflow. Then n and three values, to the three nodes and then to the researcher: "
        "the centred co-moment C = n Sxy - Sx Sy and the centred variances A = n Sxx - Sx^2 "
        "and B = n Syy - Sy^2 (the sums over the query set are not opened). With n, A and B "
        "give the two sample variances (as summary would) and C the sample covariance, but "
        "not the means. The researcher gets n, r = C / sqrt(A B), t and p. With "
        '"method": "spearman", instead of the range bit above: per column not declared '
        "within a sort key's range, one bit, whether every value lies in it; the comparison "
        "bits of two sorts of the obliviously shuffled rows (data-independent), to the three "
        "nodes; then n and C, A and B of the doubled mid-ranks instead of the values (A and "
        "B tell, with n, the sums of t^3 - t over the ties of either column, not which "
        "values tie)." + FILTER_DISCLOSES
    )
    filterable: ClassVar[bool] = True
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "columns": {
                "type": "array",
                "items": {"type": "string", "minLength": 1},
                "minItems": 2,
                "maxItems": 2,
                "description": "two numeric or date typed columns",
            },
            "alternative": {
                "enum": list(ALTERNATIVES),
                "description": "as scipy.stats.pearsonr (default two-sided)",
            },
            "method": {
                "enum": list(METHODS),
                "description": "pearson (default), or spearman: Pearson's r of the mid-ranks",
            },
        },
        "required": ["columns"],
        "additionalProperties": False,
    }

    # -- parameters --------------------------------------------------------------------

    def infos(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> tuple[ColumnInfo, ColumnInfo]:
        first, second = (
            named_column(self.name, f"columns/{i}", column, NUMERIC_KINDS, manifest)
            for i, column in enumerate(parameters["columns"])
        )
        return first, second

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        self.check_parameters(parameters)
        first, second = self.infos(parameters, manifest)
        if first.name == second.name:
            raise AnalysisError(f"{self.name}: parameter 'columns': give two different columns")
        self.filter_of(parameters, manifest)

    def base_parameters(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> dict[str, Any]:
        """The query set as the base template reads it: the first column present, and the
        filter with ``is_present`` of the second when it has missing values."""
        x, y = parameters["columns"]
        return present_query(x, [y], parameters, manifest)

    def columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo] | None = None
    ) -> list[str]:
        self.check_parameters(parameters)
        if manifest is None:
            named = list(parameters["columns"]) + referenced_columns(parameters.get("filter"))
            return list(dict.fromkeys(named))
        out: list[str] = []
        for info in self.infos(parameters, manifest):
            present = present_column(manifest, info.name)
            out += [info.name] + ([present] if present else [])
        f = self.filter_of(parameters, manifest)
        return list(dict.fromkeys(out + (list(f.columns) if f is not None else [])))

    def typed_columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> list[str]:
        return sorted(set(super().typed_columns(parameters, manifest)) | set(parameters["columns"]))

    # -- the program -------------------------------------------------------------------

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]) -> QuerySet:
        return await super().gate(d, inputs, self.base_parameters(parameters, inputs.manifest))

    async def _checked(
        self, d: Disclosure, inputs: Inputs, infos: tuple[ColumnInfo, ...]
    ) -> list[AShare]:
        """Both columns' shares, after the overflow check of the module doc."""
        unchecked = [i for i, info in enumerate(infos)
                     if not range_rules_out_overflow(info, inputs.row_count)]
        return await spread_checked(d, inputs, infos, unchecked, self.name)

    def memory_estimate(self, parameters: dict[str, Any], rows: int) -> int:
        """Spearman sorts both columns (twice a sort's memory); Pearson sums."""
        if parameters.get("method", "pearson") == "spearman":
            return 2 * rows * SORT_MEMORY_PER_ROW
        return super().memory_estimate(parameters, rows)

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        s, rows = d.session, inputs.row_count
        infos = self.infos(parameters, inputs.manifest)
        method = parameters.get("method", "pearson")
        if method == "spearman":
            if rows > MAX_SPEARMAN_ROWS:
                return d.refused(
                    f"{self.name}: spearman takes at most {MAX_SPEARMAN_ROWS:,} rows (the "
                    f"pinned versions hold {rows:,}); its ranks would overflow the ring"
                )
            x, y = await self._ranks(d, inputs, infos, query.rows)
        else:
            x, y = await self._checked(d, inputs, infos)
            if query.rows is not None:
                both = await arith.mul(s, concat([x, y]), concat([query.rows, query.rows]))
                x, y = both[:rows], both[rows:]
        products = await arith.mul(s, concat([x, y, x]), concat([x, y, y]))
        sxx, syy, sxy = (products[i * rows : (i + 1) * rows].sum().reshape(1) for i in range(3))
        sx, sy = x.sum().reshape(1), y.sum().reshape(1)
        n_share = self.rows_in(d, inputs, query)
        terms = await arith.mul(
            s, concat([n_share, sx, n_share, sy, n_share, sx]), concat([sxx, sx, syy, sy, sxy, sy])
        )
        a_share = terms[0:1] - terms[1:2]
        b_share = terms[2:3] - terms[3:4]
        c_share = terms[4:5] - terms[5:6]
        gate = query.gate_required()
        what = "" if method == "pearson" else " of the ranks"
        n = await d.open_one("n", n_share, gate)
        c = await d.open_one(f"C = n Sxy - Sx Sy{what}", c_share, gate)
        a = await d.open_one(f"A = n Sxx - Sx^2{what}", a_share, gate)
        b = await d.open_one(f"B = n Syy - Sy^2{what}", b_share, gate)
        alternative = parameters.get("alternative", "two-sided")
        return {
            "columns": [info.name for info in infos],
            "method": method,
            "alternative": alternative,
            **pearson(n, c, a, b, alternative),
        }

    # -- Spearman ----------------------------------------------------------------------

    def key_range(self, info: ColumnInfo, rows: int) -> tuple[int, int, bool]:
        """(low, high, trusted): the encoded values a sort key admits, with high + 1 for
        the rows outside the query set, and whether the declared range guarantees them."""
        return key_range(info, rows, self.name, reserve=1)

    async def _ranks(
        self, d: Disclosure, inputs: Inputs, infos: tuple[ColumnInfo, ...], rows_in: AShare | None
    ) -> tuple[AShare, AShare]:
        """Doubled mid-ranks of both columns over the query set (0 outside it), in the
        order of the second sort (the module doc)."""
        s, rows = d.session, inputs.row_count
        ranges = [self.key_range(info, rows) for info in infos]
        values = [inputs.share(info.name) for info in infos]
        for info, x, (low, high, trusted) in zip(infos, values, ranges, strict=True):
            if low > high:
                raise AnalysisError(
                    f"{self.name}: column '{info.name}' declares a range "
                    f"that does not fit a sort key over {rows} rows"
                )
            if not trusted and not await d.all_within(f"'{info.name}' value", x, low, high):
                raise DataValidationError(
                    f"{self.name}: column '{info.name}' holds a value outside [{low}, {high}] "
                    f"(encoded), the range its sort keys admit for {rows} rows"
                )
        sentinels = [high + 1 for _, high, _ in ranges]
        member = public_share(s.party, np.ones(rows, dtype=np.int64))
        if rows_in is not None:
            member = rows_in
            moved = await arith.mul(
                s,
                concat([member, member]),
                concat([v - t for v, t in zip(values, sentinels, strict=True)]),
            )
            values = [moved[:rows] + sentinels[0], moved[rows:] + sentinels[1]]
        bits = [sort.key_bits_for(low, t) for (low, _, _), t in zip(ranges, sentinels, strict=True)]
        with d.protocol(
            "sort comparison bits of obliviously shuffled rows",
            "data-independent: distinct keys in a random order",
        ):
            key, (other, m) = await sort.sort(s, values[0], [values[1], member], bits[0])
        first = await self._mid_ranks(s, key)
        with d.protocol(
            "sort comparison bits of obliviously shuffled rows",
            "data-independent: distinct keys in a random order",
        ):
            key, (rx, m) = await sort.sort(s, other, [first, m], bits[1])
        second = await self._mid_ranks(s, key)
        ranked = await arith.mul(s, concat([rx, second]), concat([m, m]))
        return ranked[:rows], ranked[rows:]

    @staticmethod
    async def _mid_ranks(s: Session, key: AShare) -> AShare:
        """Twice the 1-based mid-rank of each sorted key: a + b + 2 for a run of equal keys
        at positions a..b (one equality circuit, two segmented broadcasts)."""
        n = key.shape[0]
        positions = public_share(s.party, np.arange(n, dtype=np.int64))
        one = public_share(s.party, [1])
        if n == 1:
            return positions * 2 + 2
        same = await compare.equals(s, key[1:], key[:-1])
        starts = concat([one, 1 - same])
        ends = concat([1 - same, one])
        (low,) = await scan.broadcast_from_starts(s, starts, [positions])
        (high,) = await scan.broadcast_from_starts(
            s, reversed_share(ends), [reversed_share(positions)]
        )
        return low + reversed_share(high) + 2


def reversed_share(x: AShare) -> AShare:
    """The shares of a vector in reverse order (local)."""
    return AShare(x.party, np.ascontiguousarray(x.a[::-1]), np.ascontiguousarray(x.b[::-1]))
