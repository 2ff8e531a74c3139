"""``median`` v1: the median (R type 7) of a numeric or date column over its present rows.

Protocol: disclosure control first (the query set of present rows per contributing dataset
version, pooled and by its complement, only the outcome bits opened;
:mod:`dic_connector.node.analyses.disclosure`), then a shuffle-then-quickselect of
:func:`mpc.protocols.sort.select_ranks` (oblivious 3-party shuffle, distinct composite keys,
random pivots; Hamada et al. ICISC 2012, Asharov et al. CCS 2022) on replicated shares
(Araki et al. CCS 2016; ABY3). Only the sum of the two middle order statistics is opened.

**Missing values.** Rows whose ``__present`` flag is 0 get the key ``high`` (the top of the
key range) in place of their value: key = high + present * (x - high), one multiplication
round. Every present value is <= high, so the n smallest keys are, as a multiset, exactly
the present values and the order statistics of ranks floor((n-1)/2) and floor(n/2) among
*all* rows are those of the present values. n is opened (after the threshold bit) before
the selection because the ranks are public.

**Median.** R type 7 at p = 1/2 is x_(floor h) + (h - floor h)(x_(ceil h) - x_(floor h)) with
h = (n - 1)/2, i.e. (x_(floor((n-1)/2)) + x_(floor(n/2))) / 2 for every n: the program opens
the single value x_lo + x_hi (twice the median, exact; no weight rounding as in
:func:`mpc.protocols.sort.quantiles`) and divides by 2 * 10^scale in the clear.

**Key width.** The sort compares keys of ``key_bits`` bits plus b = bits of N - 1 for the
row index (N = all rows), key_bits + b <= 63. When the manifest declares ``minimum`` and
``maximum`` that fit, they give the key range (the encoder enforces them, as
:mod:`mpc.protocols.sort` requires). Otherwise the key range is the widest available,
[-2^(62-b), 2^(62-b) - 1] (intersected with any declared bound), e.g. |v| < 2^42 ~ 4.4e12
(encoded) at N = 10^6, and every key is checked to lie in it under MPC, opening only the
all-in-range bit (:meth:`~dic_connector.node.analyses.disclosure.Disclosure.all_within`): an out-of-range
key would give a wrong order and could make the opened comparison bits depend on the data.
A failed check is a :class:`~dic_connector.errors.DataValidationError`; n and the median
stay closed.

Result: ``{"n": int, "median": float}``; refused: ``{"suppressed": true, "reason": ...}``.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, ClassVar

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    SORT_MEMORY_PER_ROW,
    Analysis,
    Inputs,
    numeric_column_parameters,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet
from dic_connector.node.analyses.manifest import ColumnInfo
from mpc.protocols import arith, sort
from mpc.session import Session
from mpc.sharing import AShare


def key_range(info: ColumnInfo, rows: int, recipe: str = "median", *, halvings: int = 1,
              reserve: int = 0) -> tuple[int, int, bool]:
    """(low, high, trusted): the encoded values a sort key over ``rows`` rows admits, and
    whether the declared range alone guarantees them (no check under MPC needed).

    The widest signed key leaves room for the row index (:func:`mpc.protocols.sort`);
    ``halvings`` halves it that many times (1: the value itself; 2: a composite key such as
    survival's 2 t + (1 - e)), and ``reserve`` keeps that many values free at the top (a
    sentinel high + 1 for the rows outside the query set)."""
    widest = 63 - sort.index_bits(max(rows, 1))
    key_low = -(1 << (widest - halvings))
    key_high = (1 << (widest - halvings)) - 1 - reserve
    low, high = info.encoded_bounds()
    if low is not None and high is not None and key_low <= low and high <= key_high:
        return low, high, True
    low = key_low if low is None else max(low, key_low)
    high = key_high if high is None else min(high, key_high)
    if low > high:
        raise AnalysisError(f"{recipe}: column '{info.name}' declares a range that does not "
                            f"fit a {widest}-bit sort key over {rows} rows")
    return low, high, False


async def sort_keys(s: Session, inputs: Inputs, info: ColumnInfo, high: int,
                    rows_in: AShare | None) -> AShare:
    """The column with the rows outside the query set (``rows_in``, 0/1 shares; None:
    none) replaced by ``high`` (see the module doc)."""
    x = inputs.share(info.name)
    if rows_in is None:
        return x
    return (await arith.mul(s, rows_in, x - high)) + high


async def checked_keys(d: Disclosure, inputs: Inputs, info: ColumnInfo, query: QuerySet,
                       key_range: tuple[int, int, bool], recipe: str) -> AShare:
    """The sort keys (:func:`sort_keys`), checked under MPC to lie in the key range unless
    the declared range guarantees it; :class:`DataValidationError` naming ``recipe``."""
    low, high, trusted = key_range
    keys = await sort_keys(d.session, inputs, info, high, query.rows)
    if not trusted and not await d.all_within("sort key", keys, low, high):
        raise DataValidationError(
            f"{recipe}: column '{info.name}' holds a value outside the sort key range "
            f"[{low}, {high}] (encoded, scale {info.scale}) for {inputs.row_count} rows")
    return keys


class Median(Analysis):
    memory_per_row: ClassVar[int] = SORT_MEMORY_PER_ROW
    name: ClassVar[str] = "median"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = ("Median (R type 7) of a numeric or date column, pooled over the "
                              "pinned datasets, over the rows where it is present.")
    discloses: ClassVar[str] = QUERY_SET_GATE + (
        "Otherwise, if the manifest declares no range that "
        "fits the sort: one bit, whether every value lies in the sort's key range (if not, "
        "the analysis fails and nothing else is opened). Then n, to the three nodes; the "
        "comparison bits of a sort of the obliviously shuffled rows, to the three nodes "
        "(these depend only on the number of rows and public randomness, not on the values); "
        "twice the median (the sum of the two middle values), to the three nodes. The "
        "researcher gets n and the median." + FILTER_DISCLOSES)
    filterable: ClassVar[bool] = True
    parameters_schema: ClassVar[dict[str, Any]] = numeric_column_parameters()
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        info = self.typed_column(parameters, inputs.manifest)
        rows = inputs.row_count
        low, high, trusted = key_range(info, rows)
        n_share = self.rows_in(d, inputs, query)
        keys = await checked_keys(d, inputs, info, query, (low, high, trusted), self.name)
        gate = query.gate_required()
        n = await d.open_one("n", n_share, gate)
        key_bits = sort.key_bits_for(low, high)
        with d.protocol("sort comparison bits of obliviously shuffled rows",
                        "data-independent: distinct keys in a random order"):
            middle = await sort.select_ranks(d.session, keys, [(n - 1) // 2, n // 2],
                                             key_bits)
        twice = await d.open_one("twice the median (sum of the two middle values)",
                                 middle.sum().reshape(1), gate)
        return {"n": n, "median": float(Fraction(twice, 2 * 10**info.scale))}
