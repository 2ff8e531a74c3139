"""``summary`` v1: n, mean, variance and standard deviation of a numeric or date column.

Under MPC (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3): y = x * present
(one multiplication round; y = x without a missing-value indicator), then the sum of y
(local) and the sum of squares <y, y> (one dot-product round, ABY3 §5.1). Disclosure
control first, exactly as for ``mean``
(:meth:`~dic_connector.node.analyses.disclosure.Disclosure.query_set`): every contributing
dataset version has >= min_subset_size present rows, n >= k, the missing values are 0 or
>= k. Then n, the sum and the sum of squares are opened; given n, these are the same
information as the mean and the sample variance, which the researcher receives with them
(the variance and sd computed in plaintext, exactly, from the three integers).

**Overflow.** With fixed-point integers v = x * 10^scale and N rows, the sum of squares
stays below 2^63 when every |v| <= floor(sqrt((2^63 - 1) / N)) (which also bounds the plain
sum). A declared ``minimum``/``maximum`` inside that bound rules overflow out; otherwise
every value is checked against it under MPC and only the all-in-range bit is opened
(:meth:`~dic_connector.node.analyses.disclosure.Disclosure.all_within`); a value outside is
a :class:`~dic_connector.errors.DataValidationError` and nothing else is opened. For
N = 10^5 rows the bound is 9.6e6 encoded, e.g. |x| < 96,000 at scale 2.

Result: ``{"n": int, "sum": str, "sum_of_squares": str, "mean": float, "variance":
float | None, "sd": float | None}``; ``sum`` and ``sum_of_squares`` are exact decimal
strings (``scale`` and ``2 * scale`` places); variance and sd are the sample statistics
(denominator n - 1; None when n = 1). Refused: ``{"suppressed": true, "reason": ...}``.

**Perturbation** (cell-key method, :mod:`.perturbation`, when the rules ask for it): as in
``mean``, n opens as ``count`` opens it and the sum as S' = S + v x_max / 16; the sum of
squares as Q' = Q + v'' x_max^2 / 16 with a third key (v'' from the cell's key times the
magnitude constant squared): |Q' - Q| <= D x_max^2 / 16. Each is an independent,
consistent draw, so two releases over row sets that differ in a row give neither x nor x^2
exactly. The mean is S' / n' and the variance (Q' - S'^2 / n') / (n' - 1), clamped at 0
(None when n' < 2); the overflow check leaves 4 bits of headroom.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any, ClassVar

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
    numeric_column_parameters,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.mean import decimal_string
from dic_connector.node.analyses.perturbation import (
    MAGNITUDE_DISCLOSES,
    MAGNITUDE_SHIFT,
    Perturbation,
)
from mpc.protocols import arith
from mpc.sharing import AShare

SIGNED_MAX = (1 << 63) - 1


def square_bound(rows: int, headroom: int = 0) -> int:
    """The largest |v| for which ``rows`` squares sum below 2^63 (2^(63 - headroom))."""
    return math.isqrt((SIGNED_MAX >> headroom) // max(rows, 1))


def squares_cannot_wrap(info: ColumnInfo, rows: int, headroom: int = 0) -> bool:
    """Whether the declared range alone keeps the sum of squares inside the ring."""
    low, high = info.encoded_bounds()
    if low is None or high is None:
        return False
    return max(abs(low), abs(high)) <= square_bound(rows, headroom)


def sample_variance(n: int, total: int, squares: int, scale: int) -> Fraction | None:
    """(sum of squares - sum^2 / n) / (n - 1), in the column's unit squared."""
    if n < 2:
        return None
    spread = Fraction(squares) - Fraction(total * total, n)
    return spread / Fraction((n - 1) * 10 ** (2 * scale))


class Summary(Analysis):
    name: ClassVar[str] = "summary"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("n, mean, sample variance and standard deviation of a numeric "
                              "or date column, pooled over the pinned datasets, over the rows "
                              "where it is present.")
    discloses: ClassVar[str] = QUERY_SET_GATE + (
        "Otherwise, if the manifest declares no range that rules out an overflow of the "
        "64-bit sum of squares: one bit, whether every value lies in the range in which it "
        "cannot overflow (if not, the analysis fails and nothing else is opened). Then n, "
        "the sum and the sum of squares of the present values, to the three nodes and then "
        "to the researcher (equivalently: n, the mean and the sample variance)."
        + FILTER_DISCLOSES + MAGNITUDE_DISCLOSES + " The sum of squares Q is then opened as "
        "Q + v'' x_max^2 / 16, v'' from another key.")
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = numeric_column_parameters()
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        info = self.typed_column(parameters, inputs.manifest)
        n_share = self.rows_in(d, inputs, query)
        perturbation = Perturbation.of(d, inputs.record_keys)
        if perturbation is not None:
            return await self._perturbed(d, inputs, info, query, n_share, perturbation)
        total_share, squares_share = await self._moments(d, inputs, info, query.rows)
        gate = query.gate_required()
        n = await d.open_one("n", n_share, gate)
        total = await d.open_one("sum", total_share, gate)
        squares = await d.open_one("sum of squares", squares_share, gate)
        variance = sample_variance(n, total, squares, info.scale)
        return {"n": n, "sum": decimal_string(total, info.scale),
                "sum_of_squares": decimal_string(squares, 2 * info.scale),
                "mean": float(Fraction(total, n * 10**info.scale)),
                "variance": None if variance is None else float(variance),
                "sd": None if variance is None else math.sqrt(max(float(variance), 0.0))}

    async def _perturbed(self, d: Disclosure, inputs: Inputs, info: ColumnInfo,
                         query: QuerySet, n_share: AShare, perturbation: Perturbation
                         ) -> dict[str, Any]:
        """n', S' and Q' (module doc), and the statistics computed from them."""
        s, gate = d.session, query.gate_required()
        x = await checked_for_squares(d, inputs, info, self.name, MAGNITUDE_SHIFT,
                                      perturbation.table.params.max_noise)
        y = x if query.rows is None else await arith.mul(s, x, query.rows)
        total_share = y.sum().reshape(1)
        squares_share = (await arith.dot(s, y, y)).reshape(1)
        n_shown, (total, squares) = await perturbation.open_moments(
            d, None if query.rows is None else n_share,
            [("sum", total_share, 1), ("sum of squares", squares_share, 2)], y, query.rows,
            gate)
        n = n_shown if n_shown is not None else await d.open_one("n", n_share, gate)
        unit = 10**info.scale
        variance = (None if n < 2 else
                    max((squares - total * total / n) / ((n - 1) * unit * unit), Fraction(0)))
        places = 10**MAGNITUDE_SHIFT  # 1 / 2^4 = 625 / 10^4
        return {"n": n, "sum": decimal_string(int(total * places), info.scale + 4),
                "sum_of_squares": decimal_string(int(squares * places), 2 * info.scale + 4),
                "mean": None if n <= 0 else float(total / (n * unit)),
                "variance": None if variance is None else float(variance),
                "sd": None if variance is None else math.sqrt(float(variance)),
                "perturbed": {**perturbation.sum_json(),
                              "sum_of_squares_noise": "v'' * max|x|^2 / 16"}}

    async def _moments(self, d: Disclosure, inputs: Inputs, info: ColumnInfo,
                       rows_in: AShare | None) -> tuple[AShare, AShare]:
        """Shares of the sum and the sum of squares over the query set's rows ``rows_in``
        (0/1 shares; None: every row), each shape (1,)."""
        x = await checked_for_squares(d, inputs, info, self.name)
        y = x if rows_in is None else await arith.mul(d.session, x, rows_in)
        return y.sum().reshape(1), (await arith.dot(d.session, y, y)).reshape(1)


async def checked_for_squares(d: Disclosure, inputs: Inputs, info: ColumnInfo,
                              analysis: str, headroom: int = 0, extra: int = 0) -> AShare:
    """The column's shares, after the overflow check of the module doc (opening one bit)
    when its declared range does not keep the sum of squares over all rows in the ring;
    with ``headroom`` bits to spare and room for ``extra`` more squares (a perturbed sum
    of squares: 2^f Q + v x_max^2, |v| <= D)."""
    x = inputs.share(info.name)
    rows = inputs.row_count + extra
    if not squares_cannot_wrap(info, rows, headroom):
        bound = square_bound(rows, headroom)
        if not await d.all_within(f"'{info.name}' value", x, -bound, bound):
            raise DataValidationError(
                f"{analysis}: column '{info.name}' holds a value outside [-{bound}, "
                f"{bound}] (encoded, scale {info.scale}), in which the sum of squares "
                f"over {rows} rows cannot overflow")
    return x
