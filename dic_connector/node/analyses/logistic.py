"""``logistic_regression`` v1: logistic regression by IRLS under MPC, X'WX never opened.

The model logit P(y = 1) = b_0 + sum_j b_j x_j over the rows where y (a boolean) and every
covariate are present and the filter holds: coefficients, standard errors (from the
inverse Fisher information), z and two-sided p (normal), as
``statsmodels.api.Logit(y, add_constant(X)).fit()``. Covariates as ``linear_regression``
(numeric, date, boolean, categorical by its levels but the first); the same parameter limit.

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3), after step 1
of :mod:`~dic_connector.node.analyses.regression` (gates, n, the variances; y's true rows
are gated as a boolean covariate's: events >= k per contributor and in all, non-events 0
or >= k):

1. **Standardise** the covariates under MPC: z_ij = (n u_ij - S_j) sqrt((n - 1) / (n
   M_jj)) (exact integers n u - S r_i, one round, scaled by public constants with exact
   shifts to F = 20 fractional bits); |z| <= sqrt(n - 1) (Samuelson 1968). The design
   matrix is [r, z] (r: the query set's 0/1 shares), zero outside the query set.
2. **IRLS** (Fisher scoring, :data:`IRLS_ITERATIONS` = 6, public) on the standardised
   coefficients g from g = 0: eta = [r, z] g (one round, exact shift); mu = sigma(eta) by
   the piecewise-linear interpolant of the logistic function on knots every 1/16 over
   [-12, 12] (flat beyond), written in the hinge basis mu = c_0 + sum_k d_k max(eta - t_k,
   0): one batched comparison circuit against the public knots, one round for the hinges,
   one exact shift; its error is below 5e-5 (h^2 / 8 max |sigma''|). w = mu (1 - mu); G =
   4 / n sum_i w_i x_i x_i' (lambda_max <= trace <= p, entries <= 1) and the score s = 1 /
   n sum_i x_i (y_i - mu_i) (|s_j| <= 1); G^-1 by Newton-Schulz
   (:func:`mpc.protocols.linalg.newton_schulz`, 16 iterations from I / p: its public bound
   2^17 / p on the iterates holds in every IRLS iteration); g += 4 G^-1 s, each g_j then
   clamped to [-C, C], C = 2^22 / (p sqrt(n)) (one comparison circuit, one round), so
   that |eta| <= 2^22 and no product wraps the ring, even under separation.
3. **Checks**, one bit each: the last Newton-Schulz residual within 2^-12 (else refused
   as collinear), every |g_j| < C / 2 (else refused as separated: a clamped coefficient
   diverges), the last step within 2^-8 (else refused as not converged).
4. **Open** the standardised coefficients g and the diagonal of G^-1: b_j = g_j / sd_j and
   Var(g) = 4 G^-1 / n (the inverse Fisher information of the standardised model, at the
   last iterate but one). The intercept b_0 = g_0 - sum_j b_j xbar_j from the opened
   slopes with the public P_j = round(2^t b_j): **open** sum_j P_j S_j (local, exact in the
   ring). Its variance a' Var(g) a with a = (1, -xbar_j / sd_j): the a_j are computed as
   ``linear_regression``'s m_j (one bit: every |a_j| <= 64, unless the ranges imply it;
   else the intercept's SE is null) and **open** a' G^-1 a.

**What opens**, to the three nodes and then to the researcher: the gate bits (y's and
each indicator's too), the range bit, n, the variances, the three check bits, the mean
bit, a' G^-1 a, the p standardised coefficients, the p diagonal entries of G^-1, and the
intercept's mean term: with n and the variances exactly the coefficients and their squared
SEs. X'WX, X'y and the means are not opened.

**Accuracy.** The interpolant moves the estimates by about 1e-3 of an SE; the SEs come
from G^-1 at 20 bits. Measured against statsmodels Logit on 200 rows, 3 covariates: the
estimates within 7e-4 of an SE, the SEs within 5e-6 relative. 4-8 s on three loopback
parties in one process (96 Newton-Schulz iterations of 18 rounds dominate; a warm start
from the previous iterate would cut them, but its iterates have no public bound).

Result: ``{"y", "x", "n", "coefficients": [{"term", "estimate", "se", "z", "p"}, ...],
"max_parameter_ratio"}``; refused: ``{"suppressed": true, "reason"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from dic_connector.node.analyses.base import FILTER_DISCLOSES, Inputs
from dic_connector.node.analyses.disclosure import Disclosure, Gate, QuerySet, Release, public_share
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.regression import (
    INTERCEPT,
    MEAN_LIMIT,
    REGRESSION_GATES,
    LinearRegression,
    Moments,
    absolute_bound,
)
from mpc.protocols import arith, compare, linalg
from mpc.protocols.shift import shift_right
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Fractional bits of the design matrix, mu, w and the coefficients.
F = 20
#: Fractional bits of the hinge coefficients d_k.
D_BITS = 40
#: Fractional bits of the intercept's SE vector a.
A_BITS = 16
IRLS_ITERATIONS = 6
NS_ITERATIONS = 16
#: Knots of the sigmoid interpolant: every 1/KNOTS_PER_UNIT over [-KNOT_LIMIT, KNOT_LIMIT].
KNOTS_PER_UNIT = 16
KNOT_LIMIT = 12
#: Largest |entry| of I - G X and of the last step that count as converged.
RESIDUAL_LIMIT = 1 << (F - 12)
STEP_LIMIT = 1 << (F - 8)


def hinge_sigmoid() -> tuple[int, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(c_0 2^(F + D_BITS), knots 2^F, d_k 2^D_BITS) of the interpolant of the module doc,
    with sum_k d_k = 0 exactly (flat beyond the last knot)."""
    knots = np.arange(-KNOT_LIMIT * KNOTS_PER_UNIT, KNOT_LIMIT * KNOTS_PER_UNIT + 1) / KNOTS_PER_UNIT
    values = 1.0 / (1.0 + np.exp(-knots))
    slopes = np.diff(values) * KNOTS_PER_UNIT
    d = np.rint(np.diff(np.concatenate([[0.0], slopes, [0.0]])) * 2.0**D_BITS).astype(np.int64)
    d[-1] -= int(d.sum())
    c0 = round(float(values[0]) * 2.0 ** (F + D_BITS))
    return c0, np.rint(knots * 2.0**F).astype(np.int64), d


def ratio_constant(exponent: int, num: int, den: int) -> int:
    """round(2^exponent sqrt(num / den)) for positive integers."""
    return (math.isqrt((1 << (2 * exponent + 2)) * num // den) + 1) // 2


def ratio_scaling(bound: int, bits: int, num: int, den: int) -> tuple[int, int, int]:
    """(e, c, t): x sqrt(num / den) 2^bits = ((x >> e) c) >> t for |x| <= bound, with
    ((bound >> e) + 1) c < 2^62 and t <= 40 (as regression.mean_scaling)."""
    e = 0
    while True:
        for t in range(40, -1, -1):
            c = ratio_constant(e + bits + t, num, den)
            if ((bound >> e) + 1) * c < 1 << 62:
                return e, c, t
        e += 1


def broadcast(x: AShare, shape: tuple[int, ...]) -> AShare:
    """The shares of x broadcast to ``shape`` (numpy rules; local)."""
    return AShare(x.party, np.ascontiguousarray(np.broadcast_to(x.a, shape)),
                  np.ascontiguousarray(np.broadcast_to(x.b, shape)))


async def sigmoid(s: Session, eta: AShare) -> AShare:
    """mu 2^F for eta 2^F (the hinge interpolant): one comparison circuit, one product
    round, one exact shift."""
    c0, knots, d = hinge_sigmoid()
    rows, k = eta.shape[0], knots.shape[0]
    wide = broadcast(eta.reshape(rows, 1), (rows, k))
    public_knots = np.broadcast_to(knots, (rows, k))
    above = await compare.greater_equal_public(s, wide, np.ascontiguousarray(public_knots))
    hinges = await arith.mul(s, above, wide - np.ascontiguousarray(public_knots))
    total = (hinges * np.broadcast_to(d, (rows, k)).copy()).sum(axis=1) + c0
    return await shift_right(s, total, D_BITS)


def upper_matrix(party: int, upper: AShare, size: int) -> AShare:
    """A symmetric (size, size) matrix from its upper triangle with the diagonal (row by
    row; local)."""
    a = np.zeros((size, size), dtype=np.uint64)
    b = np.zeros((size, size), dtype=np.uint64)
    rows, cols = np.triu_indices(size)
    a[rows, cols] = a[cols, rows] = upper.a
    b[rows, cols] = b[cols, rows] = upper.b
    return AShare(party, a, b)


class LogisticRegression(LinearRegression):
    name: ClassVar[str] = "logistic_regression"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Logistic regression of a boolean column on numeric, date, boolean or categorical "
        "covariates: coefficients, standard errors, z and p by IRLS under MPC (X'WX and X'y "
        "are not opened), pooled over the pinned datasets."
    )
    outcome_kinds: ClassVar[frozenset[str]] = frozenset({"boolean"})
    discloses: ClassVar[str] = REGRESSION_GATES + (
        "y is gated as a boolean covariate is (its events and non-events). Then the "
        "centred variances A_j = n Sjj - Sj^2 of each covariate and y; one bit, whether the "
        "last Newton-Schulz inverse converged (refused as collinear if not); one bit, "
        "whether every standardised coefficient stayed within C / 2 (refused as separated "
        "if not); one bit, whether the last IRLS step was below 2^-8 (refused as not "
        "converged if not); one bit, whether every covariate's mean lies within 64 standard "
        "deviations of 0, unless the ranges imply it; the standardised coefficients, the "
        "diagonal of the inverse information, a' G^-1 a (the intercept's variance) and the "
        "intercept's numerator: with n and the variances, exactly the coefficients and "
        "their squared standard errors, which the researcher gets with z and p. X'WX, X'y "
        "and the means are not opened." + FILTER_DISCLOSES
    )

    def indicators(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[ColumnInfo]:
        return [*super().indicators(parameters, manifest),
                self.infos(parameters, manifest)[-1]]

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        moments = await self.moments(d, inputs, parameters, query)
        if isinstance(moments, Release):
            return moments
        return await self._irls(d, inputs, moments, query)

    async def _standardised(self, d: Disclosure, inputs: Inputs, m: Moments,
                            query: QuerySet) -> AShare:
        """z 2^F, shape (k, rows): (n u - S) sqrt((n - 1) / (n M_jj)) on the query set."""
        s, rows, n = d.session, inputs.row_count, m.n
        k = len(m.infos) - 1
        u = m.columns[:k]
        sums = broadcast(m.sums[:k].reshape(k, 1), (k, rows))
        if query.rows is not None:
            sums = await arith.mul(s, sums, broadcast(query.rows.reshape(1, rows), (k, rows)))
        centred = u * n - sums
        scalings = [ratio_scaling(2 * n * absolute_bound(info, rows), F, n - 1, n * spread)
                    for info, spread in zip(m.infos[:k], m.spreads[:k], strict=True)]
        first = await shift_right(s, centred, np.repeat(
            np.array([e for e, _, _ in scalings], dtype=np.int64)[:, None], rows, axis=1))
        scaled = first * np.repeat(np.array([c for _, c, _ in scalings],
                                            dtype=np.int64)[:, None], rows, axis=1)
        return await shift_right(s, scaled, np.repeat(
            np.array([t for _, _, t in scalings], dtype=np.int64)[:, None], rows, axis=1))

    async def _irls(self, d: Disclosure, inputs: Inputs, m: Moments, query: QuerySet
                    ) -> dict[str, Any] | Release:
        s, rows, n = d.session, inputs.row_count, m.n
        k = len(m.infos) - 1
        p = k + 1
        z = await self._standardised(d, inputs, m, query)
        one = (public_share(s.party, np.ones(rows, dtype=np.int64)) if query.rows is None
               else query.rows)
        design = concat([(one * (1 << F)).reshape(1, rows), z])  # (p, rows)
        y = inputs.share(m.infos[-1].name) * (1 << F)
        clamp = max(1, math.floor(2.0**22 / (p * math.sqrt(n)))) << F
        upper = np.triu_indices(p)
        pairs = len(upper[0])
        scale_g = round(2.0**42 / n)  # 4 / n at 40 bits
        scale_s = round(2.0**40 / n)
        g = public_share(s.party, np.zeros(p, dtype=np.int64))
        for _ in range(IRLS_ITERATIONS):
            eta = await shift_right(s, (await arith.mul(
                s, design, broadcast(g.reshape(p, 1), (p, rows)))).sum(axis=0), F)
            mu = await sigmoid(s, eta)
            w = await shift_right(s, await arith.mul(s, mu, (1 << F) - mu), F)
            v = await shift_right(s, await arith.mul(s, design, broadcast(w.reshape(1, rows),
                                                                          (p, rows))), F)
            residual = broadcast((y - mu).reshape(1, rows), (p, rows))
            sums = await arith.dot(s, concat([v[upper[0]], design]),
                                   concat([design[upper[1]], residual]))
            first = await shift_right(s, sums, 20)
            scaled = first * np.array([scale_g] * pairs + [scale_s] * p, dtype=np.int64)
            fixed = await shift_right(s, scaled, 40)
            info = upper_matrix(s.party, fixed[:pairs], p)
            inverse = await linalg.newton_schulz(s, info, float(p), F, NS_ITERATIONS)
            step = (await linalg.matmul(s, inverse, fixed[pairs:].reshape(p, 1), F)
                    ).reshape(p) * 4
            g = await clamped(s, g + step, clamp)
        ns = await linalg.residual(s, info, inverse, F)
        if not await d.all_within("entry of I - G X (last Newton-Schulz, 2^-20 units)",
                                  ns.reshape(p * p), -RESIDUAL_LIMIT, RESIDUAL_LIMIT):
            return d.refused(f"{self.name}: the covariates are (near-)collinear: the inverse "
                             "of the information matrix did not converge")
        if not await d.all_within("standardised coefficient (2^-20 units)", g,
                                  -clamp // 2, clamp // 2):
            return d.refused(f"{self.name}: a coefficient diverges: the outcome is (quasi-)"
                             "separated by the covariates")
        if not await d.all_within("last IRLS step (2^-20 units)", step, -STEP_LIMIT,
                                  STEP_LIMIT):
            return d.refused(f"{self.name}: IRLS did not converge in {IRLS_ITERATIONS} "
                             "iterations (is the outcome (quasi-)separated by the "
                             "covariates?)")
        return await self._open(d, inputs, m, g, inverse)

    async def _open(self, d: Disclosure, inputs: Inputs, m: Moments, g: AShare,
                    inverse: AShare) -> dict[str, Any]:
        s, n, gate = d.session, m.n, m.gate
        k = len(m.infos) - 1
        p = k + 1
        rows = inputs.row_count
        bounds = [n * absolute_bound(info, rows) for info in m.infos[:k]]
        means_ok = all(b < 1 << 61 for b in bounds)
        variance0: float | None = None
        if means_ok:
            scalings = [ratio_scaling(b, A_BITS, n - 1, n * a)
                        for b, a in zip(bounds, m.spreads[:k], strict=True)]
            first = await shift_right(s, m.sums[:k], np.array([e for e, _, _ in scalings],
                                                              dtype=np.int64))
            scaled = first * np.array([c for _, c, _ in scalings], dtype=np.int64)
            means = await shift_right(s, scaled, np.array([t for _, _, t in scalings],
                                                          dtype=np.int64))
            # |xbar_j| / sd_j <= bound_j / sqrt(n M_j / (n - 1)) publicly
            limit = [b * math.sqrt((n - 1) / (n * a)) for b, a in zip(bounds, m.spreads[:k],
                                                                       strict=True)]
            if max(limit) > MEAN_LIMIT:
                means_ok = await d.all_within(
                    "covariate's mean over its sd (2^-16 units)", means,
                    -MEAN_LIMIT << A_BITS, MEAN_LIMIT << A_BITS)
            if means_ok:
                a = concat([public_share(s.party, [1 << A_BITS]), -means]).reshape(p, 1)
                ga = await linalg.matmul(s, inverse, a, F)
                quad = await arith.dot(s, a.reshape(1, p), ga.reshape(1, p))
                variance0 = await d.open_one("a' G^-1 a (2^-32 units)", quad.reshape(1), gate
                                             ) / 2.0 ** (2 * A_BITS)
        coefficients = [await d.open_one(f"standardised coefficient of '{name}' (2^-20 units)",
                                         g[j:j + 1], gate) / 2.0**F
                        for j, name in enumerate([INTERCEPT] + [i.name for i in m.infos[:k]])]
        diag = [await d.open_one(f"[G^-1]_jj of '{name}' (2^-20 units)",
                                 inverse[j, j:j + 1], gate) / 2.0**F
                for j, name in enumerate([INTERCEPT] + [i.name for i in m.infos[:k]])]
        sds = [math.sqrt(a / (n * (n - 1))) for a in m.spreads[:k]]
        slopes = [c / sd for c, sd in zip(coefficients[1:], sds, strict=True)]
        intercept = await self._mean_term(d, m, slopes, bounds, gate)
        return self._logit_result(m, coefficients[0], intercept, slopes, sds, diag, variance0)

    async def _mean_term(self, d: Disclosure, m: Moments, slopes: list[float],
                         bounds: list[int], gate: Gate) -> float | None:
        """sum_j b_j xbar_j (encoded units) from the public slopes, as the intercept of
        ``linear_regression``; None without a fixed-point scale for it."""
        total = sum(abs(v) * b for v, b in zip(slopes, bounds, strict=True)) + sum(bounds) / 2
        t = next((t for t in range(40, -1, -1) if total * 2.0**t < 2.0**62), -1)
        if t < 0:
            return None
        weights = np.array([round(v * 2**t) % (1 << 64) for v in slopes], dtype=np.uint64)
        value = await d.open_one(f"intercept's mean term sum_j P_j S_j (2^-{t} units)",
                                 (m.sums[:len(slopes)] * weights).sum().reshape(1), gate)
        return value / (2.0**t * m.n)

    def _logit_result(self, m: Moments, g0: float, mean_term: float | None,
                      slopes: list[float], sds: list[float], diag: list[float],
                      variance0: float | None) -> dict[str, Any]:
        n = m.n
        k = len(m.infos) - 1
        rows: list[dict[str, Any]] = []
        se0 = None if variance0 is None else math.sqrt(max(4 * variance0 / n, 0.0))
        estimate0 = None if mean_term is None else g0 - mean_term
        row = term(INTERCEPT, estimate0, se0)
        if estimate0 is None:
            row["reason"] = ("the declared ranges are too wide for the intercept's "
                             "fixed-point scale")
        elif se0 is None:
            row["reason"] = ("a covariate's mean lies more than 64 standard deviations "
                             "from 0: centre it (e.g. a later date origin)")
        rows.append(row)
        for j, info in enumerate(m.infos[:k]):
            unit = 10.0 ** info.scale
            se = math.sqrt(max(4 * diag[j + 1] / n, 0.0)) / sds[j]
            rows.append(term(info.name, slopes[j] * unit, se * unit))
        return {"y": m.infos[-1].name, "x": [i.name for i in m.infos[:k]], "n": n,
                "coefficients": rows, "max_parameter_ratio": str(m.ratio)}


def term(name: str, estimate: float | None, se: float | None) -> dict[str, Any]:
    """One row of the coefficients table: z and two-sided normal p."""
    if estimate is None or se is None or se == 0:
        return {"term": name, "estimate": estimate, "se": se, "z": None, "p": None}
    # deferred: scipy.stats takes seconds to import
    from scipy import stats
    z = estimate / se
    return {"term": name, "estimate": estimate, "se": se, "z": z,
            "p": float(2 * stats.norm.sf(abs(z)))}


async def clamped(s: Session, g: AShare, bound: int) -> AShare:
    """Each element of g clipped to [-bound, bound] (one comparison circuit, one round)."""
    p = g.shape[0]
    outside = await compare.less_than_public(
        s, concat([g, -g]), np.array([-bound] * (2 * p), dtype=np.int64))
    low, high = outside[:p], outside[p:]
    moved = await arith.mul(s, concat([low, high]),
                            concat([(-g).add_public(np.int64(-bound)),
                                    (-g).add_public(np.int64(bound))]))
    return g + moved[:p] + moved[p:]
