"""``survival`` v2: v1 with Greenwood confidence intervals, numbers at risk, the median's CI.

Everything of :mod:`.survival` (v1) holds; v2 adds, per released group:

**Confidence intervals of S(t)** as lifelines' ``KaplanMeierFitter`` gives them by default
(``confidence_interval_``, the exponential Greenwood or "log(-log)" interval; Kalbfleisch
and Prentice 2002; the note of S. Sawyer that lifelines cites): with Greenwood's sum
G(t) = sum over event times t_i <= t of d_i / (n_i (n_i - d_i)) (Greenwood 1926) and
v = log S(t) < 0,

    lower, upper = exp(-exp(log(-v) -/+ z sqrt(G) / v)),  z = Phi^-1(1 - alpha / 2).

Like the log factors, G telescopes over the sorted rows with *public* coefficients: the row
at position j is at risk with n - j rows, and over a tie of d events among n_i at risk
sum_(k<d) 1 / ((n_i - k)(n_i - k - 1)) = 1/(n_i - d) - 1/n_i = d / (n_i (n_i - d)),
lifelines' term; censorings add nothing. So G(t) = sum_j [t_j <= t] e_j g_j,
g_j = 1 / ((n - j)(n - j - 1)) in fixed point 2^-60 (:func:`greenwood_factors`), summed in
the same multiplication round as log S. The last row (n - j = 1) has an infinite g: it is
0 here, as lifelines drops the term of a tie that empties the risk set (its
``cumulative_sq_`` stays finite) and reports the band [0, 0] where S = 0. Where no event
has happened yet (log S = 0) lifelines' band is NaN, filled with 1.0: [1, 1] here too. G(t)
is opened only where S(t) is released and 0 < S(t) < 1; the bounds are computed in
plaintext (:func:`interval`). Parameter ``alpha`` (default 0.05), as lifelines', within
[0.001, 0.5] (the formats of :mod:`.km_band`), a decimal string.

**Numbers at risk** at each requested time, the rows with time >= t (the risk set n_i of
Kaplan-Meier and of the risk tables under KM plots, R's ``summary(survfit, times)``):
n - sum_j [t_j < t], the comparison bits in the same circuit as [t_j <= t], no
multiplication. Between two requested times t_a < t_b the difference of the numbers at
risk is the events and censorings in [t_a, t_b), and each number is itself a count of the
group's rows: in one circuit (``safe_residuals``) the rows leaving the risk set between
every pair of requested times (and from the start) and the number at risk at each are
checked 0 or >= k; in ascending order a number at risk is released when its rows since the
last released one and itself are 0 or >= k (:func:`released_counts`), null otherwise. Then
every difference of released numbers (and n minus each) is a sum of checked differences,
so 0 or >= k as well.

**The median's confidence interval** (with ``"median"``): lifelines'
``median_survival_times(confidence_interval_)``, the first time each band falls to <= 1/2,
computed under MPC at every row (:mod:`.km_band`); two values open.

**What opens**, beyond v1 (all to the three nodes, then to the researcher): per released
group, per requested time, G(t) (one value) where S(t) opens and is neither 0 nor 1; per
pair of requested times (and from the start) one bit, whether the rows leaving the risk
set between them are 0 or >= k, and per requested time one bit, whether its number at risk
is 0 or >= k; the number at risk at each requested time they allow (one value each); with
``"median"``, two values: the first times the lower and the upper band fall to <= 1/2 (each
an event time of the group, or "not reached").

**Fixed-point error.** Each g_j (>= 1 / (n (n - 1))) is rounded to within 2^-61, a relative
error of at most n (n - 1) 2^-61, and so is G, a sum of them (4e-9 at n = 10^5); with
log S's error (:mod:`.survival`) the bounds agree with lifelines' to about 1e-9 at the
sizes tested (the tests allow 1e-7). Numbers at risk are exact. The median's
interval: see :mod:`.km_band` (a band within about 1e-6 of 1/2 may cross either way).

**Not lifelines' answer on non-monotone bands.** At small n and small alpha the lower
band can dip below 1/2 at the first deaths and rise again; lifelines' ``qth_survival_time``
binary-searches the band (``searchsorted``, which assumes it monotone) and may return a
later crossing. Here the bound is the first time, as the definition says; the two agree on
monotone bands (tested).

Result per released group, beyond v1's keys: ``"survival_ci": [[lower, upper] | null, ...]``
(null where S(t) is withheld), ``"at_risk": [int | null, ...]`` (null where withheld),
``"alpha": float``, ``"median_ci": [lower | null, upper | null]`` (null: not reached; the
whole key null when the median is not asked for).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, Decimal
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import FILTER_DISCLOSES, Inputs
from dic_connector.node.analyses.disclosure import Disclosure
from dic_connector.node.analyses.groups import Group
from dic_connector.node.analyses.km_band import ALPHA_RANGE, greenwood_factors_at, median_interval
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.survival import (
    LOG_FRACTION_BITS,
    IntArray,
    SortedGroup,
    Survival,
    decimal_time,
    log_factors,
    survival_of,
)
from dic_connector.node.analyses.time_to_event import survival_schema
from mpc.protocols import arith, compare
from mpc.sharing import AShare, concat

#: Fractional bits of the Greenwood coefficients (their sum is below 1).
GREENWOOD_FRACTION_BITS = 60
#: lifelines' default alpha.
DEFAULT_ALPHA = "0.05"


def greenwood_factors(n: int, rows: int) -> IntArray:
    """round(2^60 / ((n - j)(n - j - 1))) for positions j < n - 1, 0 at n - 1 and beyond
    (the public per-row Greenwood coefficients; see the module doc)."""
    return greenwood_factors_at(n, rows, GREENWOOD_FRACTION_BITS)


def ceil_encoded(t: float | str, scale: int) -> int:
    """ceil(t 10^scale): [v < t] = [v < ceil_encoded(t)] for encoded integers v."""
    return int((decimal_time(t) * 10**scale).to_integral_value(ROUND_CEILING))


def z_of(alpha: float) -> float:
    """lifelines' z: Phi^-1(1 - alpha / 2) (scipy's, as lifelines computes it; imported here,
    not at the top: scipy.stats is 40 % of a node's import time and most requests need no
    quantile)."""
    from scipy.stats import norm

    return float(norm.ppf(1 - alpha / 2))


def interval(log_opened: int, greenwood_opened: int | None, z: float) -> list[float]:
    """[lower, upper] of the exponential Greenwood interval from an opened log S and G
    (fixed point), with lifelines' values where S is 0 ([0, 0]) or 1 ([1, 1])."""
    s = survival_of(log_opened)
    if s == 0.0:
        return [0.0, 0.0]
    if log_opened == 0 or greenwood_opened is None:
        return [1.0, 1.0]
    v = log_opened / float(1 << LOG_FRACTION_BITS)
    w = z * math.sqrt(max(greenwood_opened, 0) / float(1 << GREENWOOD_FRACTION_BITS)) / v
    return [math.exp(-math.exp(math.log(-v) - w)), math.exp(-math.exp(math.log(-v) + w))]


def released_counts(
    safe: Mapping[tuple[int, int], bool], itself: Sequence[bool], m: int
) -> list[bool]:
    """Per requested time in ascending order, whether its number at risk opens: greedily,
    each whose rows leaving since the last released time (-1: the start; ``safe``) and
    whose own number (``itself``) are 0 or >= k."""
    last, out = -1, []
    for b in range(m):
        allowed = safe[(last, b)] and itself[b]
        out.append(allowed)
        last = b if allowed else last
    return out


def alpha_of(parameters: Mapping[str, Any]) -> float:
    """The request's alpha (a decimal string, as signed requests carry it)."""
    return float(Decimal(parameters.get("alpha", DEFAULT_ALPHA)))


#: The standing-policy scope of v2 (:meth:`SurvivalIntervals.policy_scope`).
INTERVALS_SCOPE = "survival:intervals"


class SurvivalIntervals(Survival):
    """survival v2: v1 with confidence intervals of S(t) and the numbers at risk."""

    version: ClassVar[str] = "2"
    summary: ClassVar[str] = (
        "Kaplan-Meier survival S(t) at given times with its 95% (1 - alpha) exponential "
        "Greenwood confidence interval, the numbers at risk at those times and the median "
        "survival time (lifelines' conventions), pooled over the pinned datasets, "
        "optionally per group."
    )
    discloses: ClassVar[str] = Survival.discloses.removesuffix(FILTER_DISCLOSES).replace(
        " No event count, number at risk or step of the curve is opened.", ""
    ) + (
        " Then, per released group: Greenwood's sum G(t) (fixed point, 2^-60), one value "
        "per requested t whose S(t) opens and is neither 0 nor 1; per pair of requested "
        "times (and from the start) one bit, whether the rows leaving the risk set between "
        "them (events and censorings) are 0 or >= k, and per requested time one bit, "
        "whether the number at risk (rows with time >= t) is 0 or >= k; the number at risk, "
        "one value per requested t whose own bit and the bit since the last released time "
        "allow it (the others are withheld). The researcher also gets the confidence "
        "interval of each released S(t) and the released numbers at risk. With "
        '"median": two values, the first times the lower and the upper band of the '
        "interval fall to <= 1/2 (each an event time, or that it is not reached). No event "
        "count or step of the curve is opened." + FILTER_DISCLOSES
    )
    parameters_schema: ClassVar[dict[str, Any]] = survival_schema(
        {
            **Survival.parameters_schema["properties"],
            "alpha": {
                "type": "string",
                "pattern": "^0\\.[0-9]{1,6}$",
                "description": "1 - the confidence level of the intervals, a decimal string "
                f"from {ALPHA_RANGE[0]} to {ALPHA_RANGE[1]} (default \"0.05\"; signed "
                "requests carry no floats)",
            },
        }
    )

    def policy_scope(self, parameters: dict[str, Any]) -> str:
        """``survival:intervals``: v2 opens more than v1 (G(t), numbers at risk, the
        median's interval), so a standing policy a data owner set for ``survival`` (or
        ``*``) before v2 existed does not cover it; only one naming this scope does (as
        ``quantiles:extremes``). Each request can still be approved on its own."""
        return INTERVALS_SCOPE

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        super().validate(parameters, manifest)
        low, high = ALPHA_RANGE
        if not low <= alpha_of(parameters) <= high:
            raise AnalysisError(
                f"{self.name}: 'alpha' has value {parameters['alpha']!r}; need "
                f"{low} <= alpha <= {high}"
            )

    async def _curve(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], group: Group
    ) -> dict[str, Any]:
        c = await self.sorted_group(d, inputs, parameters, group)
        s, k = d.session, len(c.thresholds)
        weighted = c.ev * log_factors(c.n, c.rows)  # e_j c_j, local
        squared = c.ev * greenwood_factors(c.n, c.rows)  # e_j g_j, local
        z = z_of(alpha_of(parameters))
        out: dict[str, Any] = {
            "group": group.label,
            "n": c.n,
            "times": c.times,
            "survival": [],
            "survival_ci": [],
            "at_risk": [],
            "alpha": alpha_of(parameters),
            "median": None,
            "median_ci": None,
        }
        if k:
            lows = [
                min(max(ceil_encoded(v, c.info.scale), c.tmin), c.sentinel) for v in c.asked
            ]
            bits = await compare.less_than_public(
                s, concat([c.t] * (2 * k)), np.concatenate([c.limits(), c.limits(lows)])
            )
            before, earlier = bits[: k * c.rows], bits[k * c.rows :]
            picked = await arith.mul(
                s, concat([before] * 3), concat([weighted] * k + [squared] * k + [c.ev] * k)
            )
            sums = c.split(picked, 3)
            logs, greenwood = sums[:k], sums[k : 2 * k]
            released = await self._released(d, c.prefix, c.thresholds, sums[2 * k :])
            left = c.split(earlier, 1)  # rows with time < t
            await self._open_curve(d, c, z, logs, greenwood, released, out)
            out["at_risk"] = await self._at_risk(d, c, lows, left)
        if parameters.get("median", False):
            out["median"] = await self._median(
                d, c.t, weighted, c.tmin, c.info.scale, c.prefix, c.gate
            )
            out["median_ci"] = await median_interval(d, c, weighted, z)
        return out

    async def _open_curve(
        self,
        d: Disclosure,
        c: SortedGroup,
        z: float,
        logs: Sequence[AShare],
        greenwood: Sequence[AShare],
        released: Sequence[bool],
        out: dict[str, Any],
    ) -> None:
        """log S(t) and, where 0 < S(t) < 1, G(t) at each released time: S and its band."""
        for v, log_share, g_share, allowed in zip(
            c.times, logs, greenwood, released, strict=True
        ):
            if not allowed:
                out["survival"].append(None)
                out["survival_ci"].append(None)
                continue
            opened = await d.open_one(f"{c.prefix}log S({v:g})", log_share, c.gate)
            g: int | None = None
            if opened != 0 and survival_of(opened) > 0.0:
                g = await d.open_one(f"{c.prefix}Greenwood sum G({v:g})", g_share, c.gate)
            out["survival"].append(survival_of(opened))
            out["survival_ci"].append(interval(opened, g, z))

    async def _at_risk(
        self, d: Disclosure, c: SortedGroup, lows: Sequence[int], left: Sequence[AShare]
    ) -> list[int | None]:
        """The numbers at risk n - left at each requested time that the rule of
        :func:`released_counts` allows; ``left``: shares of the rows with time < t. One
        circuit; opens one bit per pair of requested times (and from the start), one per
        time, and one value per released number."""
        order = sorted(range(len(lows)), key=lambda i: lows[i])
        pairs = [(a, b) for b in range(len(order)) for a in range(-1, b)]
        residuals = [left[order[b]] - (left[order[a]] if a >= 0 else 0) for a, b in pairs]
        counts = [c.n - left[order[b]] for b in range(len(order))]
        safe = await d.safe_residuals(
            f"{c.prefix}rows leaving the risk set between requested times, and at risk at "
            "each",
            concat(residuals + counts),
        )
        by_pair = {pair: safe[i] for i, pair in enumerate(pairs)}
        itself = [safe[len(pairs) + b] for b in range(len(order))]
        in_order = released_counts(by_pair, itself, len(order))
        out: list[int | None] = [None] * len(lows)
        for position, index in enumerate(order):
            if in_order[position]:
                out[index] = await d.open_one(
                    f"{c.prefix}number at risk at {c.times[index]:g}",
                    c.n - left[index],
                    c.gate,
                )
        return out
