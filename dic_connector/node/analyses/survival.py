"""``survival`` v1: Kaplan-Meier S(t) at given times and the median survival, per group.

Kaplan and Meier (JASA 53, 1958): S(t) = prod over distinct event times t_i <= t of
(1 - d_i / n_i), d_i events at t_i among the n_i rows still at risk (time >= t_i). Ties as
lifelines' ``KaplanMeierFitter`` treats them: rows censored at t_i are at risk at t_i
(events before censorings).

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3), per group:

1. Disclosure control first (:meth:`~dic_connector.node.analyses.base.Analysis.gate`): the
   query set is the rows where ``time`` and ``event`` are present and the filter holds, with
   its complements; then each group (a level of ``by``, or a filter of ``groups``) is a query
   set of its own, gated the same way (:mod:`.time_to_event`): every contributor >=
   min_subset_size rows, n_g >= k, the rows outside it 0 or >= k. A group that fails is
   refused by name, never by count; the others are released. Groups given as filters may
   overlap: each is a curve of its own (``logrank`` requires them disjoint).
2. Rows outside the group get the time ``tmax + 1`` and no event (one multiplication
   round), and the rows are sorted under MPC by the key 2 t + (1 - e) (events before
   censorings at equal times) with shuffle-then-sort (:func:`mpc.protocols.sort.sort`,
   Hamada et al. ICISC 2012, Asharov et al. CCS 2022; the opened comparison bits depend on
   no value). The group's rows then hold positions 0..n-1 and n is opened to the nodes.
3. **Per-row factors.** The row at position j is at risk with n - j rows, so its factor
   1 - e_j / (n - j) has a public denominator. Over a tie of d events among n_i at risk the
   factors telescope: (n_i - 1)/n_i ... (n_i - d)/(n_i - d + 1) = 1 - d / n_i, exactly
   lifelines' factor; censorings at the tie contribute 1. So
   log S(t) = sum_j [t_j <= t] e_j c_j with the *public* c_j = log(1 - 1/(n - j)) in fixed
   point (2^-40), and c_(n-1) = -2^10 (S drops to 0 when the last row at risk dies). The
   sum is linear in the shares, and [t_j <= t] is one comparison per row and requested time
   (one circuit), with one multiplication round.
4. **Median** (lifelines' ``median_survival_time_``: the smallest t with S(t) <= 1/2, none
   if S stays above): with the prefix sums L_j = log S at position j (local), the bits
   m_j = [L_j <= log(1/2)] (one circuit) are monotone, m_j - m_(j-1) marks the first
   crossing, and sum_j (m_j - m_(j-1)) (t_j - tmin + 1) is the median's encoded time + 1 -
   tmin (0: not reached), one multiplication round.

**Sparse steps withheld.** S(t_b) / S(t_a) is the product of the factors of the events in
(t_a, t_b], so two released times with one death between them would show that death's
factor. The events up to each requested time are summed under MPC (the same
multiplication round), and for every pair of requested times (and from the start) the
events between them are checked 0 or >= k in one circuit (``safe_residuals``). In
ascending order, S(t) is released when the events since the last released time are 0 or
>= k, and withheld (null) otherwise (:func:`released_times`). The median is one event time,
like the median of a column, and is not gated further.

**What opens**, all to the three nodes and then to the researcher: the gate bits; the
sort's data-independent comparison bits; per released group its n, the bits [0 or >= k] of
the events between each pair of requested times, log S(t) at each requested t that they
allow (one value each) and, with ``median``, one value: the median survival time or "not
reached". No event count, risk set or curve step is opened.

**Fixed-point error.** Each c_j is rounded to 2^-41, so |log S - log S_exact| <= n 2^-41
(relative error of S below 5e-8 at n = 10^5); S(t) = 0 is exact. The median compares L_j
with log(1/2) + 2^-30, so an S within a relative 2^-30 of exactly 1/2 counts as <= 1/2 (the
exact rational S = 1/2 does; lifelines' float may land on either side).

**Left out** (v2, :mod:`.survival_ci`, adds them): confidence intervals of S(t)
(exponential Greenwood, whose sum telescopes like the factors), the numbers at risk and the
confidence interval of the median (Brookmeyer and Crowley 1982, as lifelines'
``median_survival_times(confidence_interval_)``, :mod:`.km_band`). ``median_ci`` is null
in v1.

**Key width.** Keys 2 t + 1 take the time's range [tmin, tmax + 1] plus one bit and the row
index (:mod:`mpc.protocols.sort`). A declared ``minimum``/``maximum`` that fits gives it;
otherwise the widest range that fits is used and every time is checked to lie in it under
MPC, opening only the all-in-range bit.

Result: ``{"time": str, "event": str, "groups": [{"group": label | null, "n": int, "times":
[t, ...], "survival": [S(t) or null (withheld), ...], "median": float | null, "median_ci":
null}]}`` (the median null when not asked for or not reached), a refused group
``{"group": label, "suppressed": true, "reason": ...}``; a refused request ``{"suppressed":
true, "reason": ...}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    QUERY_SET_GATE,
    Inputs,
)
from dic_connector.node.analyses.disclosure import Disclosure, Gate, QuerySet
from dic_connector.node.analyses.groups import GROUPS_GATE, Group
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.time_to_event import (
    SORT_DISCLOSES,
    SurvivalRecipe,
    survival_schema,
)
from mpc.protocols import arith, compare
from mpc.sharing import AShare, concat

#: Most times one request may ask S(t) at.
MAX_TIMES = 20
#: Fractional bits of the log factors.
LOG_FRACTION_BITS = 40
#: log S after the last row at risk dies: exp of it is 0.0.
LOG_ZERO = -(1 << 10)
#: log S at or below this is reported as S = 0.
LOG_ZERO_BELOW = LOG_ZERO // 2
#: The median's tolerance on log(1/2), in units of 2^-LOG_FRACTION_BITS.
MEDIAN_TOLERANCE = 1 << (LOG_FRACTION_BITS - 30)

IntArray = npt.NDArray[np.int64]


def decimal_time(t: float | str) -> Decimal:
    """A requested time as the decimal the request wrote (a number, or a decimal string as
    signed requests carry them: canonical JSON has no floats)."""
    return Decimal(t) if isinstance(t, str) else Decimal(repr(t))


def encoded_time(t: float | str, scale: int) -> int:
    """floor(t 10^scale): [v <= t] = [v <= encoded_time(t)] for encoded integers v."""
    return int((decimal_time(t) * 10**scale).to_integral_value(ROUND_FLOOR))


def log_factors(n: int, rows: int) -> IntArray:
    """round(log(1 - 1/(n - j)) 2^40) for positions j < n - 1, LOG_ZERO at n - 1, 0 beyond
    (the public per-row coefficients; see the module doc)."""
    out = np.zeros(rows, dtype=np.int64)
    at_risk = n - np.arange(n - 1, dtype=np.float64)
    out[: n - 1] = np.rint(np.log1p(-1.0 / at_risk) * float(1 << LOG_FRACTION_BITS))
    if n >= 1:
        out[n - 1] = LOG_ZERO << LOG_FRACTION_BITS
    return out


def survival_of(log_opened: int) -> float:
    """S from an opened log S (fixed point)."""
    if log_opened <= LOG_ZERO_BELOW << LOG_FRACTION_BITS:
        return 0.0
    return min(1.0, math.exp(log_opened / float(1 << LOG_FRACTION_BITS)))


def released_times(safe: Mapping[tuple[int, int], bool], m: int) -> list[bool]:
    """Per requested time in ascending order, whether its S(t) opens: greedily, each time
    whose events since the last released time (-1: the start) are 0 or >= k (``safe``)."""
    last, out = -1, []
    for b in range(m):
        allowed = safe[(last, b)]
        out.append(allowed)
        last = b if allowed else last
    return out


@dataclass(frozen=True)
class SortedGroup:
    """One released group after the sort: its rows by time (events first, rows outside
    the group last), its opened n, and the requested times as encoded thresholds
    (``[t_j < threshold]`` = ``[t_j <= t]``)."""

    t: AShare
    ev: AShare
    n: int
    tmin: int
    #: the time of the rows outside the group (tmax + 1)
    sentinel: int
    info: ColumnInfo
    gate: Gate
    #: the transcript prefix naming the group ("" without groups)
    prefix: str
    #: the requested times as the request wrote them
    asked: list[float | str]
    thresholds: list[int]

    @property
    def rows(self) -> int:
        return int(self.t.shape[0])

    @property
    def times(self) -> list[float]:
        return [float(decimal_time(v)) for v in self.asked]

    def limits(self, thresholds: Sequence[int] | None = None) -> IntArray:
        """``thresholds`` (default: the requested ones), each repeated once per row."""
        chosen = self.thresholds if thresholds is None else thresholds
        return np.repeat(np.asarray(chosen, dtype=np.int64), self.rows)

    def split(self, x: AShare, blocks: int) -> list[AShare]:
        """The sums of ``x`` over each of its ``blocks * len(thresholds)`` runs of rows."""
        return [
            x[i * self.rows : (i + 1) * self.rows].sum().reshape(1)
            for i in range(blocks * len(self.thresholds))
        ]


class Survival(SurvivalRecipe):
    name: ClassVar[str] = "survival"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Kaplan-Meier survival S(t) at given times and the median "
        "survival time (lifelines' conventions), pooled over the "
        "pinned datasets, optionally per group."
    )
    discloses: ClassVar[str] = (
        QUERY_SET_GATE
        + GROUPS_GATE
        + (
            "Otherwise, if the manifest declares no range of the time that fits the sort: one "
            "bit, whether every time lies in the sort's key range. Then, per released group: "
            + SORT_DISCLOSES
            + "its n, to the three nodes; per pair of requested times (and from the start) "
            "one bit, whether the events between them are 0 or >= k; log S(t) (fixed point, "
            "2^-40), one value per requested t whose events since the last released time "
            'are 0 or >= k (the others are withheld); with "median": one value, the median '
            "survival time or that it is not reached. The researcher gets n, S(t) and the "
            "median per group. No event count, number at risk or step of the curve is opened."
        )
        + FILTER_DISCLOSES
    )
    parameters_schema: ClassVar[dict[str, Any]] = survival_schema(
        {
            "times": {
                "type": "array",
                "maxItems": MAX_TIMES,
                "uniqueItems": True,
                "items": {
                    "anyOf": [
                        {"type": "number"},
                        {"type": "string", "pattern": "^-?[0-9]{1,9}(\\.[0-9]{1,6})?$"},
                    ]
                },
                "description": "times (in the time column's unit) to report S(t) at: "
                "numbers, or decimal strings",
            },
            "median": {"type": "boolean", "description": "report the median survival time"},
        }
    )

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any]:
        groups = await self.gate_groups(d, inputs, parameters, query)
        out = []
        for group in groups:
            if group.query.refusal is not None:
                out.append(
                    {"group": group.label, "suppressed": True, "reason": group.query.refusal}
                )
                continue
            out.append(await self._curve(d, inputs, parameters, group))
        return {"time": parameters["time"], "event": parameters["event"], "groups": out}

    async def _curve(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], group: Group
    ) -> dict[str, Any]:
        c = await self.sorted_group(d, inputs, parameters, group)
        weighted = c.ev * log_factors(c.n, c.rows)  # e_j c_j, local
        logs: list[AShare] = []
        released: list[bool] = []
        if c.thresholds:
            k = len(c.thresholds)
            before = await compare.less_than_public(d.session, concat([c.t] * k), c.limits())
            picked = await arith.mul(
                d.session, concat([before, before]), concat([weighted] * k + [c.ev] * k)
            )
            sums = c.split(picked, 2)
            logs = sums[:k]
            released = await self._released(d, c.prefix, c.thresholds, sums[k:])
        survival: list[float | None] = []
        for v, log_share, allowed in zip(c.times, logs, released, strict=True):
            if not allowed:
                survival.append(None)
                continue
            opened = await d.open_one(f"{c.prefix}log S({v:g})", log_share, c.gate)
            survival.append(survival_of(opened))
        median: float | None = None
        if parameters.get("median", False):
            median = await self._median(
                d, c.t, weighted, c.tmin, c.info.scale, c.prefix, c.gate
            )
        return {
            "group": group.label,
            "n": c.n,
            "times": c.times,
            "survival": survival,
            "median": median,
            "median_ci": None,
        }

    async def sorted_group(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], group: Group
    ) -> SortedGroup:
        """Sort the group's rows (:meth:`sorted_rows`), open its n, and read the requested
        times as encoded thresholds."""
        info = self.time_info(parameters, inputs.manifest)
        gate = group.query.gate_required()
        prefix = "" if group.label is None else f"group '{group.label}': "
        n_share = (
            self.rows_in(d, inputs, group.query)
            if group.rows is None
            else group.rows.sum().reshape(1)
        )
        t, ev, _, tmin = await self.sorted_rows(d, inputs, parameters, group.rows)
        n = await d.open_one(f"{prefix}n", n_share, gate)
        asked = parameters.get("times", [])
        sentinel = self.time_range(info, inputs.row_count)[1] + 1
        return SortedGroup(
            t=t,
            ev=ev,
            n=n,
            tmin=tmin,
            sentinel=sentinel,
            info=info,
            gate=gate,
            prefix=prefix,
            asked=list(asked),
            thresholds=[
                min(max(encoded_time(v, info.scale) + 1, tmin), sentinel + 1) for v in asked
            ],
        )

    async def _released(
        self, d: Disclosure, prefix: str, thresholds: Sequence[int], events: Sequence[AShare]
    ) -> list[bool]:
        """Which S(t) may open: the events between consecutive released times are checked
        0 or >= k (:func:`released_times`); ``events`` are shares of the events up to each
        threshold. One circuit; opens one bit per pair of requested times (and per time,
        from the start)."""
        order = sorted(range(len(thresholds)), key=lambda i: thresholds[i])
        pairs = [(a, b) for b in range(len(order)) for a in range(-1, b)]
        counts = concat([events[order[b]] - (events[order[a]] if a >= 0 else 0) for a, b in pairs])
        safe = await d.safe_residuals(f"{prefix}events between requested times", counts)
        by_pair = {pair: safe[i] for i, pair in enumerate(pairs)}
        in_order = released_times(by_pair, len(order))
        out = [False] * len(thresholds)
        for position, index in enumerate(order):
            out[index] = in_order[position]
        return out

    async def _median(
        self,
        d: Disclosure,
        t: AShare,
        weighted: AShare,
        tmin: int,
        scale: int,
        prefix: str,
        gate: Gate,
    ) -> float | None:
        s = d.session
        cumulative = AShare(
            s.party, np.cumsum(weighted.a, dtype=np.uint64), np.cumsum(weighted.b, dtype=np.uint64)
        )
        half = round(math.log(0.5) * (1 << LOG_FRACTION_BITS)) + MEDIAN_TOLERANCE
        below = await compare.less_than_public(s, cumulative, half + 1)
        first = below - concat([below[:1] * 0, below[:-1]])
        coded = (await arith.dot(s, first, t - (tmin - 1))).reshape(1)
        opened = await d.open_one(f"{prefix}median survival time (0: not reached)", coded, gate)
        if opened == 0:
            return None
        return float(Decimal(opened - 1 + tmin) / 10**scale)
