"""``cox_regression`` v1: Cox proportional hazards by Newton-Raphson under MPC, on a time grid.

Cox (JRSS B 34, 1972), ties by Breslow (Biometrics 30, 1974). Times are coarsened to a
**public grid** of breaks g_1 < ... < g_B (the request's ``"breaks"``, or 20 equal bins
over the time column's declared range): row i's bin is c_i = #{b : t_i > g_b} in 0..B, and
the model is the Cox model of the bins, exactly ``statsmodels``' ``PHReg(c, X,
status=event, ties="breslow")``: with w_i = exp(x_i' b), the risk set R_c = {i : c_i >= c}
and d_c events in bin c,

    U(b) = sum_c [sum_(i event in c) x_i - d_c S1_c / S0_c],
    I(b) = sum_c d_c [S2_c / S0_c - (S1_c / S0_c)(S1_c / S0_c)'],

S0_c, S1_c, S2_c the sums of w, w x, w x x' over R_c. Coefficients, standard errors (from
I^-1), z, two-sided normal p, hazard ratios exp(b) and their 95 % intervals exp(b +- 1.96
SE) (plaintext, from the opened estimates). Covariates as ``linear_regression`` (numeric,
date, boolean, categorical by its levels but the first); the query set is the rows where
time, event and every covariate are present and the filter holds.

**Why a grid.** Exact event times would need a sort and the tie structure under MPC (as
``logrank`` does); on a public grid the risk sets are sums over one comparison per row and
break, and what the grid shows is public anyway. The grid is what the researcher asks for
(months, say); with a grid finer than the distinct times the fit is the Breslow fit of the
exact times. No risk set, event count per bin or weighted sum is opened.

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3), after steps 1-2
of :mod:`~dic_connector.node.analyses.logistic` (gates, n, the variances, the events
gated as ``logistic_regression`` gates its outcome; covariates standardised under MPC to z
at F = 20 bits, zero outside the query set):

1. **Outliers.** |z| <= sqrt(n - 1) (Samuelson); for n - 1 > 64^2 one bit: every |z_ij|
   <= :data:`Z_LIMIT` = 64 (else refused: a covariate lies more than 64 sd from its mean).
2. **Grid**: unless the time column declares a range within +-2^61, one bit: every
   encoded time lies within +-2^61 (else refused), so that [t_i > g_b] is exact in 64
   bits (one comparison circuit), the risk indicators R_ic (times the
   query set, one round), the events at or after each bin sum_i e_i R_ic and sum_i e_i z_i
   (one dot-product round; d_c by differences, local); z_j z_l (one round, exact shift).
3. **Newton-Raphson**, :data:`NR_ITERATIONS` = 6 public iterations on the standardised
   coefficients g from 0: eta = z' g (exact shift), clamped to [-L, L], L =
   :data:`ETA_LIMIT` = 6 (the model is invariant to a shift of eta, and z has mean 0, so
   this bounds hazard ratios between patients by e^12); w = e^eta at 22 bits
   (:func:`mpc.protocols.exp.exp`: range reduction, a degree-6 interpolant, relative
   error 1e-6); the per-row w, w z, w z z' and their risk-set sums (one dot-product
   round); S1 / S0 and S2 / S0 per bin by :func:`mpc.protocols.divide.divide`
   (normalisation by a secret power of two and Newton's reciprocal: S0 spans 2^13 .. n e^6
   2^22); U and I (two rounds). I is scaled by its trace tau (one more ``divide``, tau
   below 2^-4 counted as 0), so G = I / tau has eigenvalues in (0, 1]: G^-1 by
   Newton-Schulz (:func:`mpc.protocols.linalg.newton_schulz`, bound 1,
   :data:`NS_ITERATIONS` = 14: converges while 1 / lambda_min(G) <= about 1,000), or with
   two covariates the adjugate over det G (one ``divide``, :func:`inverted`); u = U /
   tau clamped to [-2, 2] (a trust region that keeps G^-1 u inside the ring), g += G^-1 u
   (= I^-1 U), each g_j clamped to [-16, 16]. With one covariate G = 1: no inversion.
   The division U / tau assumes |U| <= 2^17 tau (:data:`STEP_RATIO_BITS`), as holds near a
   solution; far from one a wrapped u is a pseudo-random value (clamped), and the last
   step's check refuses unless it falls within 2^-8, with probability about 2^-27 per
   coefficient.
4. **Checks**, one bit each: the last Newton-Schulz residual within 2^-12 (else refused as
   collinear; with one covariate instead: I >= 2^-4, else refused as not identified), every |g_j| < 8 (else refused: the partial likelihood is monotone, e.g. a
   covariate separates the events), every |eta_i| <= L at the last iterate but one (else
   refused: hazard ratios beyond e^12), the last step within 2^-8 (else not converged).
5. **Open** the standardised coefficients g and the diagonal of I^-1 = G^-1 / tau (one
   more ``divide``; at the last iterate but one, as ``logistic_regression``'s SEs). In
   plaintext b_j = g_j / sd_j, SE_j = sqrt([I^-1]_jj) / sd_j.

**What opens**, to the three nodes and then to the researcher: the gate bits (the events'
too, as ``logistic_regression``'s outcome), the range bit, n, the variances of the
covariates and of the event indicator (with n: the number of events), the time's range bit
(unless declared), the outlier bit (n > 4097), the four check bits, the p standardised coefficients and the p diagonal entries
of I^-1: with n and the variances exactly the coefficients and their squared SEs. No risk
set, number at risk, event count per bin, S0/S1/S2, score or information matrix is opened.
The parameter limit counts p + 1 parameters (the baseline hazard as the regressions'
intercept), p + 1 <= floor(0.33 n).

**Accuracy.** The weights carry a relative error of about 1e-6, the ratios S1 / S0 and S2 /
S0 about 2^-20 of their bound, the inverse 2^-20 kappa. Measured against statsmodels PHReg
(Breslow) on the same bins, 25 random data sets of 48-400 rows with 1-4 numeric and boolean
covariates, 3-24 breaks and |z| up to 11: estimates within 6e-5 of an SE, SEs within 4e-5
relative (the tests assert 1e-3 of an SE and 1e-3 relative); a 26th, which statsmodels
could not converge either (a monotone likelihood), was refused by the step check. At most
:data:`MAX_ROWS` rows (the sums of w z z' over a risk set stay inside the ring).

**Cost.** About 550 rounds per Newton-Raphson iteration with three or more covariates
(Newton-Schulz 252, the two divisions 160, e^eta 71), about 390 with two (the adjugate),
290 with one; the per-row exact shifts (eta, e^eta, w z, w z z') dominate at large n.
``benchmarks/analyses.py`` (three node processes, TLS, a two-core machine at load 5-7) with
two covariates and 6 breaks: 3.4 s at 48 rows (2.9-4.3), 20 s at 10^4 (peak RSS 500 MiB
per node).

Result: ``{"time", "event", "x", "n", "breaks", "ties": "breslow", "coefficients": [{"term",
"estimate", "se", "z", "p", "hazard_ratio", "ci_lower", "ci_upper"}, ...],
"max_parameter_ratio"}``; refused: ``{"suppressed": true, "reason"}``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    Inputs,
    named_column,
    present_query,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release, public_share
from dic_connector.node.analyses.logistic import (
    F,
    LogisticRegression,
    broadcast,
    clamped,
    term,
    upper_matrix,
)
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.regression import (
    MAX_COVARIATES,
    PARAMETER_RATIO,
    RATIO_PATTERN,
    REGRESSION_GATES,
    Moments,
    parameter_ratio,
)
from dic_connector.node.analyses.survival import encoded_time
from mpc.protocols import arith, compare, divide, exp, linalg
from mpc.protocols.shift import shift_right
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Most breaks a request may give, and the bins of the default grid.
MAX_BREAKS = 40
DEFAULT_BINS = 20
#: Newton-Raphson and Newton-Schulz iterations (public, data-independent).
NR_ITERATIONS = 6
NS_ITERATIONS = 14
#: |eta| is clamped to ETA_LIMIT; |z| <= Z_LIMIT; |u| = |U / tau| <= U_LIMIT; |g| <= COEF_LIMIT.
ETA_LIMIT = 6
Z_LIMIT = 64
U_LIMIT = 2
COEF_LIMIT = 16
#: Fractional bits of the weights w and of the products z_j z_l.
W_BITS = 22
ZZ_BITS = 16
#: log2 of the bounds on S1 / S0 (|z| <= 64) and S2 / S0 (z z' <= 2^12); of U / tau.
MEANS_RATIO_BITS = 12
STEP_RATIO_BITS = 17
#: tau = trace(I) below 2^-TRACE_FLOOR_BITS counts as 0 (refused as not identified).
TRACE_FLOOR_BITS = 4
#: Fractional bits of the opened diagonal of I^-1.
VARIANCE_BITS = 36
#: Largest |entry| of I - G X and of the last step that count as converged.
RESIDUAL_LIMIT = 1 << (F - 12)
STEP_LIMIT = 1 << (F - 8)
#: Most rows (S2 sums: rows e^6 2^22 2^12 < 2^62).
MAX_ROWS = 1 << 19
#: Bytes per row and bin of :meth:`CoxRegression.memory_estimate`.
COX_MEMORY_PER_ROW_AND_BIN = 5120
#: Encoded times and breaks within +-TIME_BOUND compare exactly in 64 bits.
TIME_BOUND = 1 << 61
#: The 97.5 % normal quantile of the hazard ratios' intervals.
Z_975 = 1.959963984540054

BREAK = {"anyOf": [{"type": "number"},
                   {"type": "string", "pattern": "^-?[0-9]{1,9}(\\.[0-9]{1,6})?$"}]}


class CoxRegression(LogisticRegression):
    name: ClassVar[str] = "cox_regression"
    version: ClassVar[str] = "1"
    constant_term: ClassVar[str] = "the baseline hazard"
    summary: ClassVar[str] = (
        "Cox proportional hazards regression (Breslow ties) of a time and an event column "
        "on numeric, date, boolean or categorical covariates, times on a public grid: "
        "coefficients, standard errors, z, p and hazard ratios by Newton-Raphson under MPC "
        "(no risk set is opened), pooled over the pinned datasets."
    )
    discloses: ClassVar[str] = REGRESSION_GATES.replace(
        "where y and every covariate are present", "where time, event and every covariate "
        "are present") + (
        "The event is gated as a boolean covariate is (its events and non-events). Then the "
        "centred variances A_j = n Sjj - Sj^2 of each covariate and of the event indicator "
        "(with n, the number of events); unless the time column declares a range within "
        "+-2^61, one bit, whether every time lies in it; with more than 4097 rows one bit, "
        "whether every "
        "standardised covariate lies within 64 sd of its mean; one bit, whether the last "
        "Newton-Schulz inverse converged (refused as collinear if not; with one covariate "
        "instead whether the information is at least 2^-4); one bit, whether "
        "every standardised coefficient stayed within 8 (refused as diverging if not); one "
        "bit, whether every linear predictor stayed within 6 (refused if not); one bit, "
        "whether the last Newton step was below 2^-8 (refused as not converged if not); "
        "the standardised coefficients and the diagonal of the inverse information: with n "
        "and the variances, exactly the coefficients and their squared standard errors, "
        "which the researcher gets with z, p and hazard ratios. No risk set, event count "
        "per bin, weighted sum, score or information matrix is opened." + FILTER_DISCLOSES
    )
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "time": {"type": "string", "minLength": 1,
                     "description": "a numeric or date typed column: follow-up time"},
            "event": {"type": "string", "minLength": 1,
                      "description": "a boolean typed column: 1 = event, 0 = censored"},
            "x": {"type": "array", "items": {"type": "string", "minLength": 1},
                  "minItems": 1, "maxItems": MAX_COVARIATES, "uniqueItems": True,
                  "description": "covariates: numeric, date, boolean or categorical typed "
                                 "columns (a categorical by its levels but the first)"},
            "breaks": {"type": "array", "items": BREAK, "minItems": 1,
                       "maxItems": MAX_BREAKS, "uniqueItems": True,
                       "description": "the time grid: ascending breaks (in the time "
                                      "column's unit); a row's bin is the number of breaks "
                                      "below its time. Default: 20 equal bins over the "
                                      "declared range"},
            "max_parameter_ratio": {
                "type": "string", "pattern": RATIO_PATTERN.pattern,
                "description": "at most floor(ratio n) parameters: a decimal string in (0, "
                               f"{PARAMETER_RATIO}]"},
        },
        "required": ["time", "event", "x"],
        "additionalProperties": False,
    }

    # -- parameters --------------------------------------------------------------------

    def infos(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
              ) -> list[ColumnInfo]:
        """The covariates' matrix columns, then the event's (as the regressions' y)."""
        named_column(self.name, "event", parameters["event"], self.outcome_kinds, manifest)
        return super().infos({"x": parameters["x"], "y": parameters["event"]}, manifest)

    def memory_estimate(self, parameters: dict[str, Any], rows: int) -> int:
        """A node keeps the rows' risk indicators, one per bin, and each Newton step's
        per-row products with them: about 5 KiB per row and bin (10^4 rows, 6 breaks,
        two covariates: 500 MiB peak RSS per node, ~350 MiB above the idle node)."""
        bins = len(parameters.get("breaks", ())) or DEFAULT_BINS
        return rows * (bins + 1) * COX_MEMORY_PER_ROW_AND_BIN

    def time_info(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                  ) -> ColumnInfo:
        return named_column(self.name, "time", parameters["time"], NUMERIC_KINDS, manifest)

    def thresholds(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[int]:
        """The breaks as encoded thresholds: [t > g] = [t >= threshold] for encoded t."""
        info = self.time_info(parameters, manifest)
        if "breaks" in parameters:
            values = [Decimal(v) if isinstance(v, str) else Decimal(repr(v))
                      for v in parameters["breaks"]]
            if values != sorted(values):
                raise AnalysisError(f"{self.name}: parameter 'breaks': expected ascending "
                                    f"times, got {parameters['breaks']}")
            out = [encoded_time(v, info.scale) + 1 for v in parameters["breaks"]]
            if any(abs(v) > TIME_BOUND for v in out):
                raise AnalysisError(f"{self.name}: parameter 'breaks': a break lies outside "
                                    f"+-2^61 in the encoding of '{info.name}' (scale {info.scale})")
            return out
        low, high = info.encoded_bounds()
        if low is None or high is None or high <= low:
            raise AnalysisError(f"{self.name}: parameter 'breaks': required, since "
                                f"'{info.name}' declares no minimum and maximum to derive "
                                f"{DEFAULT_BINS} bins from")
        edges = [low + (high - low) * b // DEFAULT_BINS for b in range(1, DEFAULT_BINS)]
        return [e + 1 for e in dict.fromkeys(edges)]

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        self.check_parameters(parameters)
        parameter_ratio(parameters, self.name)
        self.infos(parameters, manifest)
        self.time_info(parameters, manifest)
        for key in ("time", "event"):
            if parameters[key] in parameters["x"]:
                raise AnalysisError(f"{self.name}: parameter 'x': the {key} "
                                    f"('{parameters[key]}') cannot be a covariate too")
        if parameters["time"] == parameters["event"]:
            raise AnalysisError(f"{self.name}: parameter 'event': the time column cannot "
                                "be the event too")
        self.thresholds(parameters, manifest)
        self.filter_of(parameters, manifest)

    def base_parameters(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                        ) -> dict[str, Any]:
        """The query set: time present, and the filter with ``is_present`` of the event
        and of every covariate that has missing values."""
        return present_query(parameters["time"], [*parameters["x"], parameters["event"]],
                             parameters, manifest)

    def named_columns(self, parameters: dict[str, Any]) -> list[str]:
        return [*parameters["x"], parameters["event"], parameters["time"]]

    def read_infos(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[ColumnInfo]:
        """The covariates' matrix columns, the event's and the time's."""
        return [*self.infos(parameters, manifest), self.time_info(parameters, manifest)]

    # -- the program -------------------------------------------------------------------

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        if inputs.row_count > MAX_ROWS:
            return d.refused(f"{self.name}: more than {MAX_ROWS} rows are not supported")
        moments = await self.moments(d, inputs, parameters, query)
        if isinstance(moments, Release):
            return moments
        return await self._fit(d, inputs, parameters, moments, query)

    async def _grid(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                    query: QuerySet) -> AShare | None:
        """R (bins, rows): R_ic = [row i in the query set and its bin >= c] (step 2); None
        if a time lies outside +-2^61, where the comparisons are not exact."""
        s, rows = d.session, inputs.row_count
        info = self.time_info(parameters, inputs.manifest)
        t = inputs.share(info.name)
        low, high = info.encoded_bounds()
        if (low is None or high is None or low < -TIME_BOUND or high > TIME_BOUND) and not (
                await d.all_within(f"'{info.name}' time", t, -TIME_BOUND, TIME_BOUND)):
            return None
        limits = self.thresholds(parameters, inputs.manifest)
        b = len(limits)
        below = await compare.less_than_public(
            s, concat([t] * b), np.repeat(np.array(limits, dtype=np.int64), rows))
        above = (1 - below).reshape(b, rows)
        if query.rows is None:
            return concat([public_share(s.party, np.ones((1, rows), dtype=np.int64)), above])
        inside = await arith.mul(s, concat([query.rows] * b).reshape(b, rows), above)
        return concat([query.rows.reshape(1, rows), inside])

    async def _fit(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                   m: Moments, query: QuerySet) -> dict[str, Any] | Release:
        s, rows, n = d.session, inputs.row_count, m.n
        k = len(m.infos) - 1
        z = await self._standardised(d, inputs, m, query)  # (k, rows), 2^-F
        if n - 1 > Z_LIMIT**2 and not await d.all_within(
                "standardised covariate (2^-20 units)", z.reshape(k * rows),
                -(Z_LIMIT << F), Z_LIMIT << F):
            return d.refused(f"{self.name}: a covariate has a value more than {Z_LIMIT} "
                             "standard deviations from its mean")
        risk = await self._grid(d, inputs, parameters, query)
        if risk is None:
            return d.refused(f"{self.name}: a value of '{parameters['time']}' lies outside "
                             "+-2^61 (encoded), where the grid's comparisons are not exact")
        bins = risk.shape[0]
        events = m.columns[-1]  # e times the query set
        first, second = np.triu_indices(k)
        pairs = len(first)
        at_or_after = await arith.dot(
            s, concat([broadcast(events.reshape(1, rows), (bins, rows)),
                       broadcast(events.reshape(1, rows), (k, rows))]), concat([risk, z]))
        tail = at_or_after[:bins]
        counts = tail - concat([tail[1:], tail[:1] * 0])  # d_c
        event_z = at_or_after[bins:]  # sum over events of z, 2^-F
        zz = await shift_right(s, await arith.mul(s, z[first], z[second]), 2 * F - ZZ_BITS,
                               2 * Z_LIMIT.bit_length() + ZZ_BITS + 1)
        products = concat([z, zz])
        shifts = np.repeat(np.array([F] * k + [ZZ_BITS] * pairs, dtype=np.int64)[:, None],
                           rows, axis=1)
        w_floor = math.floor(math.exp(-ETA_LIMIT) * 2**W_BITS * (1 - 1e-4))
        low = w_floor.bit_length() - 1
        high = (rows * math.ceil(math.exp(ETA_LIMIT) * 2**W_BITS * (1 + 1e-4))).bit_length()
        trace_high = (rows * k * (Z_LIMIT**2 + 1) << F).bit_length()
        diagonal = [i for i in range(pairs) if first[i] == second[i]]
        # signed widths of the per-row shifts' results (their bit injections dominate)
        eta_bits = (k * Z_LIMIT * COEF_LIMIT).bit_length() + F + 2
        weighted_bits = (high - (rows.bit_length() - 1)) + 2 * Z_LIMIT.bit_length() + 2
        g = public_share(s.party, np.zeros(k, dtype=np.int64))
        for _ in range(NR_ITERATIONS):
            eta = await shift_right(s, (await arith.mul(
                s, z, broadcast(g.reshape(k, 1), (k, rows)))).sum(axis=0), F, eta_bits)
            w = await exp.exp(s, await clamped(s, eta, ETA_LIMIT << F), ETA_LIMIT, F, W_BITS)
            weighted = await shift_right(s, await arith.mul(
                s, broadcast(w.reshape(1, rows), (k + pairs, rows)), products), shifts,
                weighted_bits)
            v = concat([w.reshape(1, rows), weighted])  # (1 + k + pairs, rows)
            width = v.shape[0]
            sums = await arith.dot(s, broadcast(risk.reshape(bins, 1, rows), (bins, width, rows)),
                                   broadcast(v.reshape(1, width, rows), (bins, width, rows)))
            means = await divide.divide(s, sums[:, 1:], sums[:, 0], low, high,
                                        MEANS_RATIO_BITS, F)  # (bins, k + pairs), 2^-F
            m1 = means[:, :k]
            outer = await shift_right(s, await arith.mul(s, m1[:, first], m1[:, second]), F)
            terms = (await arith.mul(s, broadcast(counts.reshape(bins, 1), (bins, k + pairs)),
                                     concat([m1, means[:, k:] - outer], axis=1))).sum(axis=0)
            score = event_z - terms[:k]
            info = terms[k:]
            trace = info[diagonal].sum().reshape(1)
            scaled = (await divide.divide(s, concat([info, score]).reshape(1, pairs + k),
                                          trace, F - TRACE_FLOOR_BITS, trace_high,
                                          STEP_RATIO_BITS, F)).reshape(pairs + k)
            matrix = upper_matrix(s.party, scaled[:pairs], k)
            u = await clamped(s, scaled[pairs:], U_LIMIT << F)
            if k == 1:  # G = I / tau = 1: no inversion, the step is u = U / I
                inverse, step = linalg.identity(s.party, 1, 1 << F), u
            else:
                inverse = await inverted(s, matrix)
                step = (await linalg.matmul(s, inverse, u.reshape(k, 1), F)).reshape(k)
            g = await clamped(s, g + step, COEF_LIMIT << F)
        if k == 1:
            if not await d.all_within("information I (2^-20 units)", trace,
                                      1 << (F - TRACE_FLOOR_BITS), (1 << 62) - 1):
                return d.refused(f"{self.name}: the information is below "
                                 f"2^-{TRACE_FLOOR_BITS}: the coefficient is not identified")
        elif not await d.all_within(
                "entry of I - G X (last Newton-Schulz, 2^-20 units)",
                (await linalg.residual(s, matrix, inverse, F)).reshape(k * k),
                -RESIDUAL_LIMIT, RESIDUAL_LIMIT):
            return d.refused(f"{self.name}: the covariates are (near-)collinear: the inverse "
                             "of the information matrix did not converge")
        if not await d.all_within("standardised coefficient (2^-20 units)", g,
                                  -(COEF_LIMIT << F) // 2, (COEF_LIMIT << F) // 2):
            return d.refused(f"{self.name}: a coefficient diverges: the partial likelihood "
                             "is monotone (do the covariates separate the events?)")
        if not await d.all_within("linear predictor (2^-20 units)", eta,
                                  -(ETA_LIMIT << F), ETA_LIMIT << F):
            return d.refused(f"{self.name}: a linear predictor lies beyond +-{ETA_LIMIT} "
                             f"(hazard ratios beyond e^{2 * ETA_LIMIT} between patients)")
        if not await d.all_within("last Newton step (2^-20 units)", step, -STEP_LIMIT,
                                  STEP_LIMIT):
            return d.refused(f"{self.name}: Newton-Raphson did not converge in "
                             f"{NR_ITERATIONS} iterations")
        variances = await divide.divide(
            s, concat([inverse[j, j:j + 1] for j in range(k)]).reshape(1, k), trace,
            F - TRACE_FLOOR_BITS, trace_high, STEP_RATIO_BITS, VARIANCE_BITS)
        names = [info.name for info in m.infos[:k]]
        coefficients = [await d.open_one(f"standardised coefficient of '{name}' (2^-20 "
                                         "units)", g[j:j + 1], m.gate) / 2.0**F
                        for j, name in enumerate(names)]
        diag = [await d.open_one(f"[I^-1]_jj of '{name}' (2^-{VARIANCE_BITS} units)",
                                 variances[0, j:j + 1], m.gate) / 2.0**VARIANCE_BITS
                for j, name in enumerate(names)]
        return self._cox_result(parameters, m, coefficients, diag)

    def _cox_result(self, parameters: dict[str, Any], m: Moments, coefficients: list[float],
                    diag: list[float]) -> dict[str, Any]:
        n = m.n
        k = len(m.infos) - 1
        out: list[dict[str, Any]] = []
        for j, info in enumerate(m.infos[:k]):
            sd = math.sqrt(m.spreads[j] / (n * (n - 1))) / 10.0**info.scale
            estimate = coefficients[j] / sd
            se = math.sqrt(max(diag[j], 0.0)) / sd
            row = term(info.name, estimate, se)
            row["hazard_ratio"] = math.exp(estimate)
            row["ci_lower"] = math.exp(estimate - Z_975 * se)
            row["ci_upper"] = math.exp(estimate + Z_975 * se)
            out.append(row)
        return {"time": parameters["time"], "event": parameters["event"],
                "x": [info.name for info in m.infos[:k]], "n": n,
                "breaks": parameters.get("breaks"), "ties": "breslow",
                "coefficients": out, "max_parameter_ratio": str(m.ratio)}


async def inverted(s: Session, g: AShare) -> AShare:
    """G^-1 (2^-F) for the (k, k) information scaled by its trace (eigenvalues in (0, 1]):
    with k = 2 the adjugate over det G = ac - b^2 (<= 1/4; one product round, an exact
    shift and :func:`mpc.protocols.divide.divide`, det below 2^-17 counted as 0: 89
    rounds); otherwise Newton-Schulz from I (252 rounds). Either way entries are at most
    2^17 and the caller checks the residual I - G X."""
    k = g.shape[0]
    if k != 2:
        return await linalg.newton_schulz(s, g, 1.0, F, NS_ITERATIONS)
    entries = g.reshape(4)  # a, b, b, c
    products = await arith.mul(s, concat([entries[0:1], entries[1:2]]),
                               concat([entries[3:4], entries[1:2]]))
    det = await shift_right(s, products[0:1] - products[1:2], F, F + 2)
    adjugate = concat([entries[3:4], -entries[1:2], -entries[1:2], entries[0:1]]).reshape(1, 4)
    inverse = await divide.divide(s, adjugate, det, F - STEP_RATIO_BITS, F,
                                  STEP_RATIO_BITS, F)
    return inverse.reshape(2, 2)
