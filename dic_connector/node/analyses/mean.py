"""``mean`` v1: n, sum and mean of a numeric or date column over the rows where it is present.

Under MPC (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3): n = sum of the
present flags (local), sum = <x, present> as one dot product (ABY3 §5.1: 1 round, one ring
element sent per party), or a local sum without a missing-value indicator. Disclosure
control first (:meth:`~dic_connector.node.analyses.disclosure.Disclosure.query_set`): every
contributing dataset version has >= min_subset_size present rows, n >= k, the missing
values are 0 or >= k; only those bits are opened, and nothing else when one fails.

**Overflow.** Values are fixed-point integers v = x * 10^scale in Z_2^64, so the sum is exact
only while |sum of v| < 2^63. With N rows (all pinned versions; missing rows count as 0)
the sum cannot wrap when every v lies in [-B, B - 1], B = 2^(63 - b), b = bits of N - 1:
e.g. N = 10^6 rows (b = 20) allow |v| < 2^43 ~ 8.8e12, i.e. |x| < 8.8e10 at scale 2. When
the manifest declares ``minimum``/``maximum`` that keep N * max(|min|, |max|) * 10^scale
below 2^63, the encoder's range check guarantees this and nothing is added; otherwise
every value is checked against [-B, B - 1] under MPC and only the all-in-range bit is opened
(:meth:`~dic_connector.node.analyses.disclosure.Disclosure.all_within`); a failure is a
:class:`~dic_connector.errors.DataValidationError` and n and the sum stay closed.

Result: ``{"n": int, "sum": str, "mean": float}``. ``sum`` is an exact decimal string with
``scale`` decimal places (``"1234.50"``): the ring sum is an integer and a float would
round it above 2^53. ``mean`` is the float nearest to sum / n. Refused:
``{"suppressed": true, "reason": ...}``.

**Booleans** (true = 1): the sum is the number of rows where the column is true, a count,
so it is gated as one before anything is opened
(:meth:`~dic_connector.node.analyses.base.Analysis.gate_true`: each contributor >=
min_subset_size of them, >= k, the false rows 0 or >= k); the result adds ``"proportion"``
(= ``mean``, true / present) and ``sum`` is the integer count. A 0/1 sum cannot overflow.

**Filters** (:mod:`.filters`): n, the sum and the mean are over the rows where the column is
present and the filter holds (the dot product with their 0/1 shares).

**Perturbation** (cell-key method, :mod:`.perturbation`, when the rules ask for it): the
checks above are made on the true n and sum; then n opens as n + v, the value ``count``
shows for the same rows (the public row count stays exact), and the sum as
S' = S + v' x_max / 16, x_max the largest absolute value in the query set and v' (|v'| <=
D) the lookup of the cell's magnitude key (:meth:`.perturbation.Perturbation.open_moments`):
|S' - S| <= D x_max / 16, the same rows always give the same S', and the difference of
two sums over row sets that differ in a few rows is their sum plus two independent noises,
never exact. ``mean`` is S' / n' (None when n' <= 0), ``sum`` the exact decimal of S' (4
more decimal places), and the result adds ``"perturbed"``. The overflow check then leaves 4
bits of headroom. A boolean's sum is a count of the true rows, perturbed as a count.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any, ClassVar

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
    column_parameters,
)
from dic_connector.node.analyses.disclosure import (
    Disclosure,
    QuerySet,
    Release,
    overflow_bound,
)
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.perturbation import (
    MAGNITUDE_DISCLOSES,
    MAGNITUDE_SHIFT,
    Perturbation,
)
from mpc.protocols import arith
from mpc.sharing import AShare

SIGNED_LIMIT = 1 << 63


def decimal_string(value: int, scale: int) -> str:
    """value / 10^scale exactly, as a plain decimal string with ``scale`` places."""
    return format(Decimal(value).scaleb(-scale), "f")


def sum_cannot_wrap(info: ColumnInfo, rows: int, headroom: int = 0) -> bool:
    """Whether the declared range alone keeps the sum of ``rows`` values inside the ring
    (with ``headroom`` bits to spare)."""
    low, high = info.encoded_bounds()
    if low is None or high is None:
        return False
    limit = SIGNED_LIMIT >> headroom
    return rows * min(low, 0) >= -limit and rows * max(high, 0) < limit


async def checked_sum(d: Disclosure, inputs: Inputs, info: ColumnInfo, analysis: str,
                      rows_in: AShare | None, headroom: int = 0, extra: int = 0) -> AShare:
    """Shares of the sum of the column over the query set's rows ``rows_in`` (0/1 shares;
    None: every row), shape (1,), after the overflow check of the module doc when the
    manifest does not rule overflow out; with ``headroom`` bits to spare and room for
    ``extra`` more values (a perturbed sum: 2^f S + v x_max, |v| <= D)."""
    x = inputs.share(info.name)
    rows = inputs.row_count + extra
    if not sum_cannot_wrap(info, rows, headroom):
        bound = overflow_bound(rows) >> headroom
        if not await d.all_within(f"'{info.name}' value", x, -bound, bound - 1):
            raise DataValidationError(
                f"{analysis}: column '{info.name}' holds a value outside the range "
                f"[-2^{bound.bit_length() - 1}, 2^{bound.bit_length() - 1}) (encoded, "
                f"scale {info.scale}) in which a sum over {rows} rows cannot overflow")
    if rows_in is None:
        return x.sum().reshape(1)
    return (await arith.dot(d.session, x, rows_in)).reshape(1)


async def open_n(d: Disclosure, perturbation: Perturbation, n_share: AShare,
                 query: QuerySet) -> int:
    """n + v as ``count`` opens it for the same rows (the public row count exact)."""
    if query.rows is None:
        return await d.open_one("n", n_share, query.gate_required())
    return await perturbation.open_count(d, "n", n_share, query.rows, query.gate_required())


class Mean(Analysis):
    name: ClassVar[str] = "mean"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Count, sum and mean of a numeric or date column (of a boolean: "
                              "the proportion true), pooled over the pinned datasets, over "
                              "the rows where it is present.")
    discloses: ClassVar[str] = QUERY_SET_GATE + (
        "Otherwise, if the manifest declares no range that rules "
        "out an overflow of the 64-bit sum: one bit, whether every value lies in the range "
        "in which the sum cannot overflow (if not, the analysis fails and nothing else is "
        "opened). Then n and the sum of the present values, to the three nodes and then to "
        "the researcher, with the mean = sum / n. For a boolean column (true = 1), the "
        "sum is the number of rows where it is true, checked first like a count: one bit "
        "per contributing dataset version, whether it has at least min_subset_size of them; "
        "one bit, whether they are >= k; one bit, whether the rows where it is false are 0 "
        "or >= k; the mean is the proportion true / present." + FILTER_DISCLOSES
        + MAGNITUDE_DISCLOSES + " A boolean's sum is then a count, opened as count opens it.")
    filterable: ClassVar[bool] = True
    perturbs: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = column_parameters(
        "a numeric, date or boolean typed column")
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS | {"boolean"}

    async def _proportion(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                          query: QuerySet, info: ColumnInfo, n_share: AShare
                          ) -> dict[str, Any] | Release:
        """A boolean's mean is the proportion true / present: its sum is a count, gated as
        one (:meth:`~dic_connector.node.analyses.base.Analysis.gate_true`)."""
        true = await self.gate_true(d, inputs, parameters, query, info)
        if true.refusal is not None:
            return d.refused(true.refusal)
        perturbation = Perturbation.of(d, inputs.record_keys)
        true_share = self.rows_in(d, inputs, true)
        if perturbation is None or true.rows is None:
            n = await d.open_one("n", n_share, query.gate_required())
            total = await d.open_one("sum", true_share, true.gate_required())
            return {"n": n, "sum": str(total), "mean": total / n, "proportion": total / n}
        n = await open_n(d, perturbation, n_share, query)
        total = await perturbation.open_count(d, "sum", true_share, true.rows,
                                              true.gate_required())
        share = None if n <= 0 else min(max(total, 0), n) / n
        return {"n": n, "sum": str(total), "mean": share, "proportion": share,
                "perturbed": perturbation.as_json()}


    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        info = self.typed_column(parameters, inputs.manifest)
        n_share = self.rows_in(d, inputs, query)
        if info.kind == "boolean":
            return await self._proportion(d, inputs, parameters, query, info, n_share)
        perturbation = Perturbation.of(d, inputs.record_keys)
        gate = query.gate_required()
        if perturbation is None:
            total_share = await checked_sum(d, inputs, info, self.name, query.rows)
            n = await d.open_one("n", n_share, gate)
            total = await d.open_one("sum", total_share, gate)
            return {"n": n, "sum": decimal_string(total, info.scale),
                    "mean": float(Fraction(total, n * 10**info.scale))}
        total_share = await checked_sum(d, inputs, info, self.name, query.rows,
                                        MAGNITUDE_SHIFT, perturbation.table.params.max_noise)
        x = inputs.share(info.name)
        y = x if query.rows is None else await arith.mul(d.session, x, query.rows)
        exact_n = None if query.rows is None else n_share  # a public n is not perturbed
        n_shown, [shown] = await perturbation.open_moments(
            d, exact_n, [("sum", total_share, 1)], y, query.rows, gate)
        n = n_shown if n_shown is not None else await d.open_one("n", n_share, gate)
        places = info.scale + MAGNITUDE_SHIFT  # 1 / 2^4 = 625 / 10^4
        return {"n": n, "sum": decimal_string(int(shown * 10**MAGNITUDE_SHIFT), places),
                "mean": None if n <= 0 else float(shown / (n * 10**info.scale)),
                "perturbed": perturbation.sum_json()}
