"""The median's confidence interval under MPC: where each Greenwood band crosses 1/2.

lifelines' ``median_survival_times(kmf.confidence_interval_)`` (the interval of Brookmeyer
and Crowley, Biometrics 38, 1982, read off the pointwise band) is, per band, the first time
its value falls to <= 1/2, or "not reached". With H = -log S and Greenwood's G at a time
(:mod:`.survival_ci`), the exponential Greenwood bounds are
lower = exp(-H exp(z sqrt(G) / H)) and upper = exp(-H exp(-z sqrt(G) / H)), so with
u = H log(H / log 2):

- lower <= 1/2  iff  u >= -z sqrt(G)  iff  H >= log 2, or 0 < H and u^2 <= z^2 G;
- upper <= 1/2  iff  u >=  z sqrt(G)  iff  H >= log 2 and u^2 >= z^2 G;

and H = 0 (no event yet) is lifelines' NaN band, filled with 1. Both hold once
H >= 2^e with 2^e log(2^e / log 2) >= z, because G < 1 (the last row's infinite term is
dropped, as lifelines does); neither holds for 0 < H < 2^k_min with
log(2^k_min / log 2)^2 > 2 z^2, because G <= 2 H^2 (each row's Greenwood term is at most
twice the square of its hazard term). In between, with 2^k <= H < 2^(k + 1):

1. **Normalisation.** One comparison circuit gives [H >= 2^i] for k_min <= i <= e,
   [H >= log 2] and, from the sorted times, whether row j is the last of its time (the
   values lifelines evaluates: partial rows of a tie are not). The one-hot exponent gives,
   in one multiplication round, m = H 2^-k in [1, 2) and X = G 2^-2k = (G / H^2) m^2 < 8
   exactly (public powers of two selected by shared bits; no truncation).
2. **Logarithm.** log(H / log 2) = k log 2 + log 1.5 + log(1 + y / 1.5) - log log 2 with
   y = m - 1.5 in [-1/2, 1/2): the Taylor series to degree 12 (error below 7.2e-8; powers
   in four levels), in fixed point 2^-26 with the *exact* truncation of
   :func:`mpc.protocols.bits.trunc_exact` (the one-round truncation wraps with probability
   |x| / 2^64 per element, too often for 14 truncations a row). The coefficients carry the
   division by z, so w = m log(H / log 2) / z at 2^-28 and w^2 at 2^-56, and
   u^2 > z^2 G iff w^2 > X (both sides divided by z^2 4^k): two numbers below 2^5,
   compared with the same relative precision whatever the size of H.
3. **Crossing.** [X < w^2] in one circuit; the two bands' bits at each row's time end
   (one multiplication round); their prefix sums c_j (local) and [c_j >= 1] in one circuit
   mark the first crossing, and sum_j (first_j)(t_j - tmin + 1) per band (one round)
   is the bound's encoded time + 1 - tmin (0: not reached).

**What opens**: two values, the times where the lower and the upper band first fall to
<= 1/2 (each one event time of the group, like the median), or "not reached".

**Tolerance.** The logarithm is within about 3e-7 / z of log(H / log 2) (Taylor tail and
2^-26 floors), H within the error of :mod:`.survival`, X within a relative
n (n - 1) 2^-(55 - 2 (e - 1)) (its coefficients at 2^-(56 - 2 (e - 1)); 3e-7 at n = 10^5
for alpha = 0.05, more for n in the millions); so a bound is the first crossing of
lifelines' band unless the band at some time before it lies within about 1e-6 of 1/2 in
log(-log) terms (lifelines' own floats decide those either way). Exactly 1/2 counts
as crossed for the lower band and as not crossed for the upper one. ``alpha`` is limited to
[0.001, 0.5] here (z in [0.674, 3.29]) so that every fixed-point value keeps 2 bits of
headroom below 2^63.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction

import numpy as np

from dic_connector.node.analyses.disclosure import Disclosure
from dic_connector.node.analyses.survival import LOG_FRACTION_BITS, IntArray, SortedGroup
from mpc.protocols import arith, bits, compare
from mpc.sharing import AShare, concat

#: Fractional bits of the logarithm's fixed point.
POLY_BITS = 26
#: Degree of the Taylor polynomial of log(1 + y / 1.5).
DEGREE = 12
#: Fractional bits of X = G 2^-2k and of w^2 (both below 2^5 where they matter).
CROSSING_BITS = 56
#: The alphas the circuit's formats admit.
ALPHA_RANGE = (0.001, 0.5)


def greenwood_factors_at(n: int, rows: int, fraction_bits: int) -> IntArray:
    """round(2^fraction_bits / ((n - j)(n - j - 1))) for j < n - 1, 0 at n - 1 and beyond."""
    out = np.zeros(rows, dtype=np.int64)
    at_risk = n - np.arange(max(n - 1, 0), dtype=np.int64)
    out[: max(n - 1, 0)] = ((1 << (fraction_bits + 1)) // (at_risk * (at_risk - 1)) + 1) // 2
    return out


@dataclass(frozen=True)
class BandPlan:
    """The public constants of the circuit for one z (see the module doc)."""

    z: float
    #: below 2^k_min (and above 0) neither band is <= 1/2
    k_min: int
    #: from 2^e on both are
    e: int

    @classmethod
    def of(cls, z: float) -> BandPlan:
        k_min = math.floor(math.log2(math.log(2) * math.exp(-math.sqrt(2) * z)))
        e = 0
        while 2.0**e <= math.log(2) or 2.0**e * math.log(2.0**e / math.log(2)) < z:
            e += 1
        return cls(z, k_min, e)

    @property
    def exponents(self) -> range:
        """The k of the one-hot normalisation, k_min <= k < e."""
        return range(self.k_min, self.e)

    def thresholds(self) -> list[int]:
        """2^i H's fixed point for k_min <= i <= e, then log 2."""
        return [1 << (LOG_FRACTION_BITS + i) for i in range(self.k_min, self.e + 1)] + [
            round(math.log(2) * (1 << LOG_FRACTION_BITS))
        ]

    def log_coefficients(self) -> list[int]:
        """round((-1)^(i+1) / (i 1.5^i z) 2^26), i = 1..DEGREE: log(1 + y/1.5) / z in y."""
        out = []
        for i in range(1, DEGREE + 1):
            exact = Fraction((-1) ** (i + 1)) / (i * Fraction(3, 2) ** i)
            out.append(round(Decimal(exact.numerator) / Decimal(exact.denominator)
                             / Decimal(repr(self.z)) * (1 << POLY_BITS)))
        return out

    def log_constants(self) -> list[int]:
        """round((k log 2 + log 1.5 - log log 2) / z 2^52) per exponent k."""
        return [
            round((k * math.log(2) + math.log(1.5) - math.log(math.log(2))) / self.z
                  * (1 << (2 * POLY_BITS)))
            for k in self.exponents
        ]


def prefix_sum(x: AShare) -> AShare:
    """Shares of the running sums of x (local)."""
    return AShare(x.party, np.cumsum(x.a, dtype=np.uint64), np.cumsum(x.b, dtype=np.uint64))


def shifted(x: AShare) -> AShare:
    """x moved one position later, 0 first (local)."""
    return concat([x[:1] * 0, x[:-1]])


async def median_interval(
    d: Disclosure, c: SortedGroup, weighted: AShare, z: float
) -> list[float | None]:
    """[lower, upper]: the first times the lower and the upper band fall to <= 1/2
    (None: not reached). ``weighted``: the rows' e_j c_j (:mod:`.survival`). Opens two
    values."""
    s, rows, plan = d.session, c.rows, BandPlan.of(z)
    k_hi = plan.e - 1
    h = -prefix_sum(weighted)
    g = prefix_sum(c.ev * greenwood_factors_at(c.n, rows, CROSSING_BITS - 2 * k_hi))
    inside = (np.arange(rows) < c.n).astype(np.int64)  # public: the group's positions
    # 1. [H >= 2^i], [H >= log 2], and whether row j ends its time, in one circuit
    limits = plan.thresholds()
    gaps = concat([c.t[1:] - c.t[:-1], c.t[:1] * 0 + 1])
    below = await compare.less_than_public(
        s,
        concat([h] * len(limits) + [gaps]),
        np.concatenate(
            [np.repeat(np.asarray(limits, dtype=np.int64), rows), np.ones(rows, dtype=np.int64)]
        ),
    )
    at_least = [1 - below[i * rows : (i + 1) * rows] for i in range(len(limits) + 1)]
    ends = at_least[-1] * inside
    half, top, lowest = at_least[-2], at_least[-3], at_least[0]
    one_hot = [at_least[i] - at_least[i + 1] for i in range(len(plan.exponents))]
    scale_m = sum(
        (o * (1 << (k_hi - k)) for o, k in zip(one_hot, plan.exponents, strict=True)),
        start=h * 0,
    )
    scale_x = sum(
        (o * (1 << (2 * k_hi - 2 * k)) for o, k in zip(one_hot, plan.exponents, strict=True)),
        start=h * 0,
    )
    products = await arith.mul(
        s,
        concat([h, g, ends, ends, ends, ends]),
        concat([scale_m, scale_x, half, lowest - half, top, half - top]),
    )
    m, x, ends_half, ends_low, ends_top, ends_up = (
        products[i * rows : (i + 1) * rows] for i in range(6)
    )
    # 2. y = m - 1.5 at 2^-26, its powers, log(H / log 2) / z, w = m log(H / log 2) / z
    m_bits = LOG_FRACTION_BITS + k_hi
    # rows outside [2^k_min, 2^e) (m = 0) get m = 1.5: y = 0 there, |y| <= 1/2 everywhere
    m = m + (1 - (lowest - top)) * (3 << (m_bits - 1))
    y = await bits.trunc_exact(s, m - (3 << (m_bits - 1)), m_bits - POLY_BITS, m_bits)
    powers = [y]
    for _ in range(4):  # y^2; y^3, y^4; y^5..y^8; y^9..y^12
        have = len(powers)
        want = min(have, DEGREE - have)
        base = powers[have - 1]
        step = await arith.mul(s, concat([base] * want), concat(powers[:want]))
        truncated = await bits.trunc_exact(s, step, POLY_BITS, 2 * POLY_BITS - 1)
        powers += [truncated[i * rows : (i + 1) * rows] for i in range(want)]
    log_scaled = sum(
        (p * a for p, a in zip(powers, plan.log_coefficients(), strict=True)), start=h * 0
    ) + sum(
        (o * v for o, v in zip(one_hot, plan.log_constants(), strict=True)), start=h * 0
    )
    ell = await bits.trunc_exact(s, log_scaled, POLY_BITS, 2 * POLY_BITS + 3)  # |ell| < 8
    m_poly = y + (3 << (POLY_BITS - 1))
    w = await bits.trunc_exact(
        s, await arith.mul(s, m_poly, ell), 2 * POLY_BITS - CROSSING_BITS // 2, 2 * POLY_BITS + 4
    )
    w2 = await arith.mul(s, w, w)
    # 3. the bands' bits at each time's last row, their first crossings, the times
    exceeds = await compare.less_than(s, x, w2)  # [X < w^2]: u^2 > z^2 G
    both = await arith.mul(s, concat([ends_low, ends_up]), concat([1 - exceeds, exceeds]))
    lower = ends_half + both[:rows]
    upper = ends_top + both[rows:]
    crossed = await compare.less_than_public(
        s, concat([prefix_sum(lower), prefix_sum(upper)]), 1
    )
    reached = 1 - crossed
    first = reached - concat([shifted(reached[:rows]), shifted(reached[rows:])])
    coded_time = c.t - (c.tmin - 1)
    coded = await arith.segment_dot(s, first, concat([coded_time, coded_time]), [rows, rows])
    out: list[float | None] = []
    for i, band in enumerate(("lower", "upper")):
        opened = await d.open_one(
            f"{c.prefix}median CI: first time the {band} band <= 1/2 (0: not reached)",
            coded[i : i + 1],
            c.gate,
        )
        out.append(
            None if opened == 0 else float(Decimal(opened - 1 + c.tmin) / 10**c.info.scale)
        )
    return out
