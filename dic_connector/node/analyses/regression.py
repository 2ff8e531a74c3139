"""``linear_regression`` v1: ordinary least squares solved under MPC, X'X and X'y never opened.

The model y = b_0 + sum_j b_j x_j + e over the rows where y and every covariate are present
and the request's ``"filter"`` holds; coefficients, standard errors, t and two-sided p (t
with n - p degrees of freedom, p = coefficients including the intercept), R^2 and adjusted
R^2, as ``statsmodels.api.OLS(y, add_constant(X)).fit()``. Covariates are numeric, date
(days), boolean (0/1) or categorical columns; a categorical enters as the indicators of
its levels but the first declared one (the reference level: treatment coding, as R's
``lm`` and statsmodels' ``C()``), terms ``"<column>=<level>"``.

**Why not open X'X and X'y.** Opening the Gram matrix and X'y, as federated regressions
(DataSHIELD's ``ds.glm``) do per site, lets a researcher reconstruct rows: Huth et al.
2023 recover individual records from opened covariance matrices. Here only what is listed
below is opened, and nothing per site.

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). With the
encoded integers u_j = x_j 10^(s_j) (and y last) times the query set's 0/1 shares (one
multiplication round), the exact centred co-moment matrix M = n S - s s^T of all q = p
columns (S = the q (q + 1) / 2 sums of products, one dot-product round; s = the sums,
local; n S_jk and s_j s_k, one round), as ``correlation`` computes C, A and B. Then:

1. A **boolean** covariate's (or a level's) variance tells, with n, how many rows are true (c (n - c)), so
   its true rows are gated first as ``count`` v2 gates them (every level of a categorical,
   the reference level too, whose count n minus the others' would tell)
   (:meth:`~dic_connector.node.analyses.base.Analysis.gate_true`): each contributor >=
   min_subset_size, >= k in all, the false rows 0 or >= k. **Open** n; refused unless p <= floor(ratio n) (DataSHIELD's ``nfilter.glm``, ratio =
   0.33, which a request may only lower with ``"max_parameter_ratio"``). **Open** the
   diagonal M_jj (given n, the sample variances, what ``summary`` opens of each column);
   refused if a column is constant.
2. **Scale to correlations** by public constants: R_jk = M_jk / sqrt(M_jj M_kk). With
   e_jk such that M_jk / 2^e_jk < 2^30, the exact shift
   (:func:`mpc.protocols.shift.shift_right`, per-element shifts) of M_jk, times the
   public c_jk = round(2^(e_jk + 60) / sqrt(M_jj M_kk)) (local), is R_jk 2^60 (< 2^61),
   shifted exactly to R with 30 fractional bits (R_hi) and with 20 (R_lo), to within
   2^-29. The diagonal is 1, public.
3. **Solve** R_xx b = r_xy for the standardised slopes: R_xx^-1 by Newton-Schulz
   (:func:`mpc.protocols.linalg.newton_schulz`, X_0 = I / (p - 1), since lambda_max <=
   trace R_xx = p - 1; :data:`ITERATIONS` = 16, data-independent, at :data:`FRAC_BITS` =
   20), then b = R_xx^-1 r_xy. **Convergence** under MPC: one bit, whether every entry of
   I - R_xx X lies within 2^-12; refused as (near-)collinear otherwise (Newton-Schulz
   converges for (p - 1) / lambda_min up to about 4,300; see :mod:`mpc.protocols.linalg`).
   With one covariate R_xx = 1 is public: no iteration, no convergence bit.
4. **Open** b; **refine** it once (iterative refinement, Wilkinson 1963): the residual
   r_xy - R_xx b of the public b against R_hi is exact and local; one bit, whether it
   lies within 2^-10 (it does whenever the solve converged; else b stays as opened);
   **open** the correction R_xx^-1 (r_xy - R_xx b) at 34 fractional bits. The slopes are
   b_j sd_y / sd_j in plaintext. **Open** the diagonal of
   R_xx^-1: SE_j^2 = sigma^2 n [R^-1]_jj / M_jj. **Open** rho = RSS / TSS at the opened
   slopes, w' R w for w = (-b, 1) (public weights times shares of R_hi: local, exact
   integers; second order in the error of b): sigma^2 = rho M_yy / (n (n - p)), R^2 = 1 -
   rho. **Open** m' R_xx^-1 m for m_j = S_j / sqrt(M_jj) (the covariates' sums over their
   spread; m' R^-1 m / n = n xbar' (X_c' X_c)^-1 xbar): the intercept's SE^2 = sigma^2 (1 +
   m' R^-1 m) / n. **Open** the intercept's numerator Q = 2^t S_y - sum_j P_j S_j with
   the public P_j = round(2^t b_j sd_y / sd_j) (local, exact in the ring since |Q| < 2^62
   by the declared or checked ranges): b_0 = Q / (2^t n). The means are not opened.

**What opens**, to the three nodes and then to the researcher: the gate bits (and those of
the true rows of each boolean covariate, to the nodes); one range
bit unless the declared ranges rule out an overflow of M (as ``correlation``); n; the q
values M_jj; the convergence bit (with two or more covariates); one bit, whether every
|m_j| <= 64, unless the declared or checked ranges imply it (a covariate whose mean is
more than 64 sd from 0 gets the intercept's SE as null, "centre it"); the p - 1
standardised slopes b_j; the refinement's bit and the p - 1 corrections; the p - 1
[R^-1]_jj, rho, m' R^-1 m and Q. Given n and the M_jj these are exactly the coefficients,
their SE^2 and sigma^2 that the researcher gets (nothing else about X'X or X'y).

**Overflow and accuracy.** M lies in the signed ring under the range rule of
``correlation`` (N w <= isqrt(2^65 - 4)). Every truncation is exact (bit decomposition),
and every sum before one is bounded publicly: the Newton-Schulz iterates by 2^17 / (p - 1)
(:mod:`mpc.protocols.linalg`), so X m with m at 16 fractional bits and |m_j| <= 64 stays
below 2^59 and m' X m below 2^61. Fixed point leaves an error of about kappa(R) 2^-20 in
the standardised slopes (kappa: the condition number of the covariates' correlation
matrix) before the refinement, about 2^-29 kappa after it (R_hi's precision), times
|mean| / sd of the covariates in the intercept. Measured against statsmodels OLS on 20
random data sets of 48..200 rows with 1..4 covariates (kappa 1..4, means up to 100 sd from
0) and the tests: the coefficients within 1e-6 of max(|b_j|, SE_j) (7e-5 and 2e-4 without
the refinement), the SEs within 7e-6 relative, p-values within 5e-5 relative (or 1e-9
absolute), R^2 within 5e-9. The SEs come from the inverse at 20 bits, so their relative
error grows as kappa 2^-20: with two covariates correlated at 0.995 (kappa 412, 5,000 rows)
the coefficients were within 2e-6 of an SE and the SEs within 1e-4 relative. On three loopback parties in one process, 4 covariates
with declared ranges take 0.45 s over 200 rows and 0.6 s over 10^4 (the 16 Newton-Schulz
iterations of 18 rounds each dominate; their cost does not grow with n).

Result: ``{"y", "x", "n", "df_residual", "coefficients": [{"term", "estimate", "se", "t",
"p"}, ...], "residual_se", "r_squared", "adj_r_squared", "max_parameter_ratio"}``, the
intercept first (``"term": "(intercept)"``). Refused: ``{"suppressed": true, "reason"}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
    named_column,
    present_query,
)
from dic_connector.node.analyses.correlation import spread_bound, spread_checked
from dic_connector.node.analyses.disclosure import Disclosure, Gate, QuerySet, Release
from dic_connector.node.analyses.filters import referenced_columns
from dic_connector.node.analyses.manifest import ColumnInfo, one_hot_columns, present_column
from mpc.protocols import arith, linalg
from mpc.protocols.shift import shift_right
from mpc.sharing import AShare, concat

#: DataSHIELD's default ``nfilter.glm``: at most floor(0.33 n) coefficients.
PARAMETER_RATIO = Decimal("0.33")
#: A ratio written as a decimal string (signed requests carry no floats).
RATIO_PATTERN = re.compile(r"^0(\.[0-9]{1,6})?$")
#: Most covariates a request may name.
MAX_COVARIATES = 15
#: Fractional bits of the correlation matrix and its inverse.
FRAC_BITS = 20
#: Fractional bits of R_hi (the residual sum of squares is computed from it).
HI_BITS = 30
#: Newton-Schulz iterations (public, data-independent; module doc).
ITERATIONS = 16
#: Largest |entry| of I - R X, in units of 2^-FRAC_BITS, that counts as converged (2^-12).
RESIDUAL_LIMIT = 1 << (FRAC_BITS - 12)
#: Iterative refinement of the slopes: the residual r - R b must lie within
#: 2^-REFINE_LIMIT_BITS; its correction is opened with REFINE_BITS fractional bits.
REFINE_LIMIT_BITS = 10
REFINE_BITS = 34
#: Fractional bits of the standardised sums m_j, and the largest |m_j| allowed.
MEAN_BITS = 16
MEAN_LIMIT = 64
#: Kinds of typed column a covariate may be.
COVARIATE_KINDS: frozenset[str] = NUMERIC_KINDS | {"boolean", "categorical"}
#: Kinds of matrix column that are 0/1 indicators (a boolean, a categorical's level).
INDICATOR_KINDS: frozenset[str] = frozenset({"boolean", "one_hot"})
INTERCEPT = "(intercept)"


def parameter_ratio(parameters: dict[str, Any], analysis: str) -> Decimal:
    """The request's ``max_parameter_ratio`` (a decimal string) as a Decimal in (0, 0.33]."""
    value = parameters.get("max_parameter_ratio", str(PARAMETER_RATIO))
    if not isinstance(value, str) or not RATIO_PATTERN.fullmatch(value) or not (
            0 < Decimal(value) <= PARAMETER_RATIO):
        raise AnalysisError(f"{analysis}: parameter 'max_parameter_ratio': expected a "
                            f"decimal string in (0, {PARAMETER_RATIO}], got {value!r} (a "
                            "request may only lower the limit)")
    return Decimal(value)


def declared_bounds(info: ColumnInfo) -> tuple[int | None, int | None]:
    """The encoded range a column declares (0/1 for a boolean or a one-hot level)."""
    return (0, 1) if info.kind in INDICATOR_KINDS else info.encoded_bounds()


def needs_range_check(info: ColumnInfo, rows: int) -> bool:
    """Whether the declared range leaves an overflow of M possible (the module doc)."""
    low, high = declared_bounds(info)
    return low is None or high is None or high - low > spread_bound(rows)


def absolute_bound(info: ColumnInfo, rows: int) -> int:
    """A public bound on |u| for every encoded value of the column (declared, or checked)."""
    if needs_range_check(info, rows):
        return spread_bound(rows) // 2
    low, high = declared_bounds(info)
    assert low is not None and high is not None
    return max(abs(low), abs(high))


def scale_constant(exponent: int, square: int) -> int:
    """round(2^exponent / sqrt(square)) for integers exponent >= 0, square >= 1."""
    return (math.isqrt((1 << (2 * exponent + 2)) // square) + 1) // 2


def mean_scaling(sum_bound: int, spread_square: int) -> tuple[int, int, int]:
    """(e, c, t): m 2^MEAN_BITS = ((S >> e) c) >> t for |S| <= sum_bound and m = S /
    sqrt(spread_square): the smallest e, then the largest t <= 40, for which
    (|S| / 2^e + 1) c < 2^62 (so the product cannot wrap)."""
    e = 0
    while True:
        for t in range(40, -1, -1):
            c = scale_constant(e + MEAN_BITS + t, spread_square)
            if ((sum_bound >> e) + 1) * c < 1 << 62:
                return e, c, t
        e += 1


def weights_bits(weights: Sequence[float], limit_bits: int, value_bits: int) -> int:
    """The most fractional bits g <= 30 of public weights w for which sum_jk |W_j W_k|
    2^value_bits (1 + 2^-18) < 2^limit_bits, W = round(w 2^g); -1 if there is none."""
    for g in range(30, -1, -1):
        total = sum(abs(w) * 2**g + 0.5 for w in weights)
        if total * total * 2.0**value_bits * (1 + 2**-18) < 2.0**limit_bits:
            return g
    return -1


def t_test(estimate: float, se: float | None, df: int) -> tuple[float | None, float | None]:
    """t and its two-sided p with ``df`` degrees of freedom (None without an SE)."""
    if se is None or se == 0:
        return None, None
    # deferred: scipy.stats takes seconds to import
    from scipy import stats
    t = estimate / se
    return t, float(min(1.0, 2 * stats.t.sf(abs(t), df)))


#: What both regressions open first (the start of their ``discloses``).
REGRESSION_GATES = QUERY_SET_GATE.replace(
    "where the column is present", "where y and every covariate are present"
) + (
    "Otherwise, if the manifest declares no ranges that rule out an overflow: one bit, "
    "whether every value of the columns lies in the range in which the centred "
    "co-moments cannot overflow. Per boolean covariate and per level of a categorical "
    "one, as count v2 of it: one bit per contributing dataset version, whether it has "
    "at least min_subset_size rows where it is true, one bit whether they are >= k, one "
    "bit whether the rows where it is false are 0 or >= k (its variance tells, with n, "
    "how many are true). Then n; refused unless the number of coefficients p (with the "
    "intercept) is at most floor(0.33 n) (or the request's lower max_parameter_ratio). "
)


@dataclass(frozen=True)
class Moments:
    """What :meth:`LinearRegression.moments` computed: the columns (covariates, then y),
    the opened n and variances A_j, and shares of M (the upper triangle, row by row), of
    the column sums and of the columns times the query set (q, rows)."""

    infos: list[ColumnInfo]
    n: int
    spreads: list[int]
    moments: AShare
    sums: AShare
    gate: Gate
    ratio: Decimal
    columns: AShare


class LinearRegression(Analysis):
    name: ClassVar[str] = "linear_regression"
    version: ClassVar[str] = "1"
    #: The parameter beside the covariates that the parameter limit counts.
    constant_term: ClassVar[str] = "the intercept"
    summary: ClassVar[str] = (
        "Ordinary least squares of a numeric or date column on numeric, date, boolean or "
        "categorical covariates: coefficients, standard errors, t, p, R^2, solved under "
        "MPC (X'X and X'y are not opened), pooled over the pinned datasets."
    )
    discloses: ClassVar[str] = REGRESSION_GATES + (
        "Then the centred variances A_j = n Sjj - Sj^2 of y and each covariate (with n the "
        "sample variances, as summary would); one bit, whether the Newton-Schulz inverse of "
        "the covariates' correlation matrix converged (refused as collinear if not; none "
        "with one covariate); one bit, whether every covariate's mean lies within 64 "
        "standard deviations of 0, unless the ranges imply it; the standardised slopes; one "
        "bit, whether their residual r - R b lies within 2^-10, and if so their corrections "
        "(one step of iterative refinement); the diagonal of the inverse correlation "
        "matrix, RSS / TSS, m' R^-1 m (m: the covariates' sums over their spread) and the "
        "intercept's numerator: with n and the variances, exactly the coefficients, their "
        "squared standard errors and the residual variance, which the researcher gets with "
        "t, p and R^2. The cross products X'X, X'y and the means are not opened."
        + FILTER_DISCLOSES
    )
    filterable: ClassVar[bool] = True
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    #: Kinds of typed column the outcome ``y`` may be.
    outcome_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "y": {"type": "string", "minLength": 1,
                  "description": "the outcome: a numeric or date typed column"},
            "x": {"type": "array", "items": {"type": "string", "minLength": 1},
                  "minItems": 1, "maxItems": MAX_COVARIATES, "uniqueItems": True,
                  "description": "covariates: numeric, date, boolean or categorical typed "
                                 "columns (a categorical by its levels but the first)"},
            "max_parameter_ratio": {
                "type": "string", "pattern": RATIO_PATTERN.pattern,
                "description": "at most floor(ratio n) coefficients: a decimal string "
                               f'in (0, {PARAMETER_RATIO}] ("0.2"; {PARAMETER_RATIO}, the '
                               "default, is the largest)"},
        },
        "required": ["y", "x"],
        "additionalProperties": False,
    }

    # -- parameters --------------------------------------------------------------------

    def infos(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
              ) -> list[ColumnInfo]:
        """The covariates' manifest entries (a categorical's one-hot columns but its first
        level's), then y's."""
        xs: list[ColumnInfo] = []
        for i, column in enumerate(parameters["x"]):
            info = named_column(self.name, f"x/{i}", column, COVARIATE_KINDS, manifest)
            if info.kind != "categorical":
                xs.append(info)
                continue
            names = one_hot_columns(info)
            if len(names) < 2:
                raise AnalysisError(f"{self.name}: parameter 'x/{i}': categorical "
                                    f"'{column}' needs two levels or more")
            for name in names[1:]:
                entry = manifest.get(name)
                if entry is None or entry.kind != "one_hot":
                    raise AnalysisError(f"{self.name}: parameter 'x/{i}': categorical "
                                        f"'{column}' lacks its one-hot column '{name}' in "
                                        "the dataset manifest")
                xs.append(entry)
        return [*xs, named_column(self.name, "y", parameters["y"], self.outcome_kinds,
                                  manifest)]

    def indicators(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[ColumnInfo]:
        """The 0/1 columns whose true rows are gated: each boolean covariate, and every
        level of a categorical one, its reference level too (n minus the other levels'
        counts would tell its count)."""
        out: list[ColumnInfo] = []
        for info in self.infos(parameters, manifest)[:-1]:
            if info.kind == "one_hot":
                reference = one_hot_columns(manifest[info.column])[0]
                if all(o.name != reference for o in out):
                    out.append(manifest[reference])
            if info.kind in INDICATOR_KINDS:
                out.append(info)
        return out

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        self.check_parameters(parameters)
        parameter_ratio(parameters, self.name)
        self.infos(parameters, manifest)
        if parameters["y"] in parameters["x"]:
            raise AnalysisError(f"{self.name}: parameter 'x': y ('{parameters['y']}') "
                                "cannot be a covariate too")
        self.filter_of(parameters, manifest)

    def base_parameters(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                        ) -> dict[str, Any]:
        """The query set as the base template reads it: y present, and the filter with
        ``is_present`` of every covariate that has missing values."""
        return present_query(parameters["y"], parameters["x"], parameters, manifest)

    def named_columns(self, parameters: dict[str, Any]) -> list[str]:
        """The columns the parameters name (covariates, then the outcome)."""
        return [*parameters["x"], parameters["y"]]

    def read_infos(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> list[ColumnInfo]:
        """The columns read with their present flags: the matrix columns and the outcome
        (:meth:`infos`)."""
        return self.infos(parameters, manifest)

    def columns(self, parameters: dict[str, Any],
                manifest: Mapping[str, ColumnInfo] | None = None) -> list[str]:
        self.check_parameters(parameters)
        if manifest is None:
            named = [*self.named_columns(parameters),
                     *referenced_columns(parameters.get("filter"))]
            return list(dict.fromkeys(named))
        out: list[str] = []
        for info in self.read_infos(parameters, manifest):
            present = present_column(manifest, info.column)
            out += [info.name] + ([present] if present else [])
        out += [info.name for info in self.indicators(parameters, manifest)]
        f = self.filter_of(parameters, manifest)
        return list(dict.fromkeys(out + (list(f.columns) if f is not None else [])))

    def typed_columns(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                      ) -> list[str]:
        named = set(self.named_columns(parameters))
        return sorted(set(super().typed_columns(parameters, manifest)) | named)

    # -- the program -------------------------------------------------------------------

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]) -> QuerySet:
        return await super().gate(d, inputs, self.base_parameters(parameters, inputs.manifest))

    async def _checked(self, d: Disclosure, inputs: Inputs, infos: Sequence[ColumnInfo]
                       ) -> list[AShare]:
        """The columns' shares after the overflow check of ``correlation`` (one bit)."""
        unchecked = [i for i, info in enumerate(infos)
                     if needs_range_check(info, inputs.row_count)]
        return await spread_checked(d, inputs, infos, unchecked, self.name, ", ")

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any] | Release:
        moments = await self.moments(d, inputs, parameters, query)
        if isinstance(moments, Release):
            return moments
        return await self._solve(d, inputs, parameters, moments.infos, moments.n,
                                 moments.spreads, moments.moments, moments.sums, moments.gate,
                                 moments.ratio)

    async def moments(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> Moments | Release:
        """Steps 1 of the module doc: the exact centred co-moments M, the gates of the
        indicators, n and the variances opened (or the refusal)."""
        s, rows = d.session, inputs.row_count
        infos = self.infos(parameters, inputs.manifest)
        q, k = len(infos), len(infos) - 1
        ratio = parameter_ratio(parameters, self.name)
        columns = await self._checked(d, inputs, infos)
        z = concat([c.reshape(1, rows) for c in columns])
        if query.rows is not None:
            member = AShare(s.party, np.broadcast_to(query.rows.a, (q, rows)),
                            np.broadcast_to(query.rows.b, (q, rows)))
            z = (await arith.mul(s, z.reshape(q * rows), member.reshape(q * rows))
                 ).reshape(q, rows)
        sums = z.sum(axis=1)
        upper = np.triu_indices(q)
        products = await arith.dot(s, z[upper[0]], z[upper[1]])
        n_share = self.rows_in(d, inputs, query)
        pairs = len(upper[0])
        wide_n = AShare(s.party, np.broadcast_to(n_share.a, (pairs,)),
                        np.broadcast_to(n_share.b, (pairs,)))
        terms = await arith.mul(s, concat([wide_n, sums[upper[0]]]),
                                concat([products, sums[upper[1]]]))
        moments = terms[:pairs] - terms[pairs:]
        base = self.base_parameters(parameters, inputs.manifest)
        for info in self.indicators(parameters, inputs.manifest):  # c (n - c) tells c
            true = await self.gate_true(d, inputs, base, query, info)
            if true.refusal is not None:
                return d.refused(true.refusal)
        gate = query.gate_required()
        n = await d.open_one("n", n_share, gate)
        limit = math.floor(ratio * n)  # exact: a Decimal times an integer
        if q > limit:
            return d.refused(
                f"{self.name}: {q} coefficients ({self.constant_term} and {k} covariate(s)) "
                f"exceed "
                f"floor({ratio} n) = {limit} for the n = {n} rows of the query set "
                "(parameter limit)")
        diagonal = [int(j) for j in np.flatnonzero(upper[0] == upper[1])]
        spreads = [await d.open_one(f"A = n Sxx - Sx^2 of '{info.name}'",
                                    moments[i:i + 1], gate)
                   for info, i in zip(infos, diagonal, strict=True)]
        constant = [info.name for info, a in zip(infos, spreads, strict=True) if a == 0]
        if constant:
            return d.refused(f"{self.name}: {', '.join(repr(c) for c in constant)} "
                             "constant over the query set: the model is not identified")
        return Moments(infos, n, spreads, moments, sums, gate, ratio, z)

    async def _solve(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                     infos: list[ColumnInfo], n: int, spreads: list[int], moments: AShare,
                     sums: AShare, gate: Gate, ratio: Decimal) -> dict[str, Any] | Release:
        s = d.session
        q, k = len(infos), len(infos) - 1
        upper = np.triu_indices(q, 1)
        off = [int(i) for i, (a, b) in enumerate(zip(*np.triu_indices(q), strict=True))
               if a != b]
        squares = [spreads[a] * spreads[b] for a, b in zip(*upper, strict=True)]
        exps = [max(0, math.isqrt(sq).bit_length() - 30) for sq in squares]
        bounds = [n * absolute_bound(info, inputs.row_count) for info in infos[:k]]
        means_ok = all(b < 1 << 61 for b in bounds)
        scalings = [mean_scaling(b, a) for b, a in zip(bounds, spreads[:k], strict=True)]
        first = await shift_right(
            s, concat([moments[off], sums[:k]]),
            np.array(exps + [e for e, _, _ in scalings], dtype=np.int64))
        m_off = len(off)
        constants = np.array([scale_constant(e + 60, sq) for e, sq in zip(exps, squares,
                                                                         strict=True)],
                             dtype=np.int64)
        scaled = first[:m_off] * constants
        scaled_means = first[m_off:] * np.array([c for _, c, _ in scalings], dtype=np.int64)
        second = await shift_right(
            s, concat([scaled, scaled, scaled_means]),
            np.array([60 - HI_BITS] * m_off + [60 - FRAC_BITS] * m_off
                     + [t for _, _, t in scalings], dtype=np.int64))
        r_hi = symmetric(s.party, second[:m_off], q, 1 << HI_BITS)
        r_lo = symmetric(s.party, second[m_off:2 * m_off], q, 1 << FRAC_BITS)
        means = second[2 * m_off:].reshape(k, 1)
        r_xx, r_xy = r_lo[:k, :k], r_lo[:k, k:]
        if k == 1:  # one covariate: R_xx = 1, public, and so is its inverse
            inverse = linalg.identity(s.party, 1, 1 << FRAC_BITS)
        else:
            inverse = await linalg.newton_schulz(s, r_xx, float(k), FRAC_BITS, ITERATIONS)
            residual = await linalg.residual(s, r_xx, inverse, FRAC_BITS)
            if not await d.all_within("entry of I - R X (Newton-Schulz, 2^-20 units)",
                                      residual.reshape(k * k), -RESIDUAL_LIMIT,
                                      RESIDUAL_LIMIT):
                return d.refused(
                    f"{self.name}: the covariates are (near-)collinear: the inverse of their "
                    f"correlation matrix did not converge in {ITERATIONS} Newton-Schulz "
                    "iterations (drop or combine covariates)")
        mean_bounds = [b / math.sqrt(a) for b, a in zip(bounds, spreads[:k], strict=True)]
        if means_ok and max(mean_bounds) > MEAN_LIMIT:
            means_ok = await d.all_within(
                "covariate's sum over its spread (2^-16 units)", means.reshape(k),
                -MEAN_LIMIT << MEAN_BITS, MEAN_LIMIT << MEAN_BITS)
        slopes_share = await linalg.matmul(s, inverse, r_xy, FRAC_BITS)
        rinv_m = await linalg.matmul(s, inverse, means, FRAC_BITS) if means_ok else None
        opened = [await d.open_one(f"standardised slope of '{info.name}' (2^-20 units)",
                                   slopes_share[j], gate) for j, info in enumerate(infos[:k])]
        b = await self._refined(d, opened, r_hi, inverse, gate, infos)
        diag = [await d.open_one(f"[R^-1]_jj of '{info.name}' (2^-20 units)",
                                 inverse[j, j:j + 1], gate) / (1 << FRAC_BITS)
                for j, info in enumerate(infos[:k])]
        weights = [-v for v in b] + [1.0]
        g = weights_bits(weights, 62, HI_BITS)
        if g < 0:
            return d.refused(f"{self.name}: the standardised slopes are too large for the "
                             "fixed-point residual sum of squares")
        w = [round(v * 2**g) for v in weights]
        outer = np.array([[(a * c) % (1 << 64) for c in w] for a in w], dtype=np.uint64)
        rss = r_hi.reshape(q * q) * outer.reshape(q * q)
        rho_raw = await d.open_one("RSS / TSS at the opened slopes (2^-(2 g + 30) units)",
                                   rss.sum().reshape(1), gate)
        rho = max(rho_raw / 2.0 ** (2 * g + HI_BITS), 0.0)
        mxm = None
        if rinv_m is not None:
            quad = await arith.dot(s, means.reshape(1, k), rinv_m.reshape(1, k))
            mxm = await d.open_one("m' R^-1 m (2^-32 units)", quad.reshape(1), gate
                                   ) / 2.0 ** (2 * MEAN_BITS)
        sd_y = math.sqrt(spreads[k])
        slopes_enc = [bj * sd_y / math.sqrt(a) for bj, a in zip(b, spreads[:k], strict=True)]
        intercept_enc = await self._intercept(d, infos, inputs.row_count, n, slopes_enc,
                                              sums, gate)
        return self._result(parameters, infos, n, spreads, slopes_enc, intercept_enc, diag,
                            rho, mxm, ratio)

    async def _refined(self, d: Disclosure, opened: list[int], r_hi: AShare,
                       inverse: AShare, gate: Gate, infos: list[ColumnInfo]) -> list[float]:
        """The opened slopes after one step of iterative refinement (module doc): the
        residual r - R b of the public b against R_hi (exact, local), checked to lie
        within 2^-10 (one bit), then its correction R^-1 (r - R b) at 34 fractional bits,
        opened. The slopes as opened when b is too large or the check fails."""
        k = len(opened)
        b = [v / (1 << FRAC_BITS) for v in opened]
        if 1 + sum(abs(v) for v in b) >= 1 << 11:  # r 2^50 - R_hi B would leave the ring
            return b
        s = d.session
        weights = np.array([v % (1 << 64) for v in opened], dtype=np.uint64)
        rows = r_hi[:k, :k]
        fitted = (rows * np.broadcast_to(weights, (k, k))).sum(axis=1)
        residual = r_hi[:k, k] * (1 << FRAC_BITS) - fitted  # 2^-50 units
        bound = 1 << (HI_BITS + FRAC_BITS - REFINE_LIMIT_BITS)
        if not await d.all_within("slope residual r - R b (2^-50 units)", residual,
                                  -bound, bound):
            return b
        shifted = await shift_right(s, residual, HI_BITS + FRAC_BITS - REFINE_BITS)
        correction = await linalg.matmul(s, inverse, shifted.reshape(k, 1), FRAC_BITS)
        return [v + await d.open_one(f"correction of the slope of '{info.name}' "
                                     f"(2^-{REFINE_BITS} units)", correction[j], gate
                                     ) / 2.0**REFINE_BITS
                for j, (v, info) in enumerate(zip(b, infos, strict=False))]

    async def _intercept(self, d: Disclosure, infos: list[ColumnInfo], rows: int, n: int,
                         slopes: list[float], sums: AShare, gate: Gate) -> float | None:
        """b_0 in encoded y units, (S_y - sum_j b_j S_j) / n from the opened slopes (module
        doc); None when the ranges leave no fixed-point scale for it."""
        k = len(slopes)
        bounds = [n * absolute_bound(info, rows) for info in infos]
        total = bounds[k] + sum(abs(v) * b for v, b in zip(slopes, bounds, strict=False))
        total += sum(bounds[:k]) / 2
        t = next((t for t in range(40, -1, -1) if total * 2.0**t < 2.0**62), -1)
        if t < 0:
            return None
        weights = np.array([(-round(v * 2**t)) % (1 << 64) for v in slopes]
                           + [1 << t], dtype=np.uint64)
        numerator = (sums * weights).sum().reshape(1)
        value = await d.open_one(f"intercept numerator 2^{t} S_y - sum_j P_j S_j", numerator,
                                 gate)
        return value / (2.0**t * n)

    def _result(self, parameters: dict[str, Any], infos: list[ColumnInfo], n: int,
                spreads: list[int], slopes: list[float], intercept: float | None,
                diag: list[float], rho: float, mxm: float | None, ratio: Decimal
                ) -> dict[str, Any]:
        """The plaintext post-processing of the opened values (encoded units -> units)."""
        q, k = len(infos), len(infos) - 1
        y = infos[k]
        df = n - q
        y_unit = 10.0 ** y.scale
        sigma2 = rho * spreads[k] / (n * df)  # encoded y units squared
        rows: list[dict[str, Any]] = []
        if intercept is None:
            rows.append({"term": INTERCEPT, "estimate": None, "se": None, "t": None,
                         "p": None, "reason": "the declared ranges are too wide for the "
                                              "intercept's fixed-point scale"})
        else:
            se0 = (None if mxm is None
                   else math.sqrt(max(sigma2 * (1 + mxm) / n, 0.0)) / y_unit)
            t0, p0 = t_test(intercept / y_unit, se0, df)
            row: dict[str, Any] = {"term": INTERCEPT, "estimate": intercept / y_unit,
                                   "se": se0, "t": t0, "p": p0}
            if se0 is None:
                row["reason"] = ("a covariate's mean lies more than 64 standard deviations "
                                 "from 0: centre it (e.g. a later date origin)")
            rows.append(row)
        for j, info in enumerate(infos[:k]):
            unit = 10.0 ** info.scale / y_unit
            se = math.sqrt(max(sigma2 * n * diag[j] / spreads[j], 0.0)) * unit
            estimate = slopes[j] * unit
            t, p = t_test(estimate, se, df)
            rows.append({"term": info.name, "estimate": estimate, "se": se, "t": t, "p": p})
        r2 = 1.0 - rho
        return {"y": y.name, "x": [info.name for info in infos[:k]], "n": n,
                "df_residual": df, "coefficients": rows,
                "residual_se": math.sqrt(sigma2) / y_unit, "r_squared": r2,
                "adj_r_squared": 1.0 - rho * (n - 1) / df,
                "max_parameter_ratio": str(ratio)}


def symmetric(party: int, upper: AShare, size: int, diagonal: int) -> AShare:
    """The shares of a symmetric (size, size) matrix from its strict upper triangle (row
    by row) and a public diagonal (local)."""
    a = np.zeros((size, size), dtype=np.uint64)
    b = np.zeros((size, size), dtype=np.uint64)
    rows, cols = np.triu_indices(size, 1)
    a[rows, cols] = a[cols, rows] = upper.a
    b[rows, cols] = b[cols, rows] = upper.b
    return AShare(party, a, b) + linalg.identity(party, size, diagonal)
