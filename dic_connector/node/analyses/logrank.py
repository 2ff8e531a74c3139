"""``logrank`` v1: the log-rank test between two groups, O - E and V under MPC.

Mantel (1966), Peto and Peto (1972); as lifelines' ``logrank_test``: over the distinct
event times t with n at risk, d events, n1 of group 1 at risk and d1 of its events,

    O - E = sum_t (d1 - d n1 / n),    V = sum_t n1 (n - n1) d (n - d) / (n^2 (n - 1)),

chi2 = (O - E)^2 / V with 1 degree of freedom, p = P(chi2_1 > chi2) (scipy, in plaintext).

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). Disclosure
control as for ``survival`` (:mod:`dic_connector.node.analyses.survival`): the query set
(time and event present, the filter) and each of the two groups as a query set of its own;
with ``groups`` given as filters, one bit more: whether no row lies in both; and per group
one bit, whether its number of events is 0 or >= k (with one death, O - E would tell in
which group it is). Then the rows
of either group are sorted under MPC by time, events first (shuffle-then-sort), with their
group-1 flag g; both groups' n are opened, and for the sorted position j the pooled number
at risk N_j = n - j is public. What is *secret* is the tie structure: which rows share a
time.

- **Ties**: s_j = 1 - [t_j = t_(j-1)] marks the first row of each distinct time (one
  equality circuit); n1_j = sum_(i >= j) g_i (a local suffix sum).
- At each position, in fixed point 2^-F with F = 62 - bits(n): q_j = n1_j round(2^F / N_j)
  (local) and w_j = n1_j (N_j - n1_j) round(2^F / (N_j^2 (N_j - 1))) (one multiplication
  for n1^2); q, w and N are copied from the first row of each tie to the whole tie by
  :func:`mpc.protocols.scan.broadcast_from_starts` (ceil(log2 N) rounds), so every row
  knows the n, n1/n and w of its time.
- With events first in a tie of d events starting at n at risk, sum over its event rows of
  (2 N_j - n - 1) = d (n - d). Hence, exactly,
  O - E = sum_j e_j (g_j - q_j / 2^F) and V = sum_j e_j w_j (2 N_j - N_start - 1) / 2^F
  (two multiplication rounds), summed locally.

**What opens**: the gate bits; the sort's data-independent comparison bits; the two groups'
n; O - E (of group 1) and V, one value each (the researcher gets them with chi2 and p). No
event count, risk set or per-time term is opened.

**Fixed-point error.** Only the public reciprocals are rounded (by at most 1/2 unit of
2^-F, and 2^F >= 2^61 / n): each event row's q is off by at most n / 2 units and its V term
by n^3 / 8, so |error of O - E| <= n^3 2^-62 and |error of V| <= n^5 2^-64 (n = 48: 3e-14
and 1.4e-11; n = 1,000: 2e-10 and 5e-5; n = 10^4: 2e-7 and 5.4, against V ~ 2,500). The
errors are rounding errors of both signs and mostly cancel: at n = 10^4 (random data) chi2
came out 2e-5 relative off lifelines'. At n = 10^5, though, round(2^F / (N^2 (N - 1)))
is 0 for N > 3 10^4 and V came out 6,635 instead of 14,941, so v1 refuses more than
:data:`MAX_ROWS` rows (after opening n; the refusal says only that n exceeds it). Beyond
needs a 128-bit ring or an exact truncation (bit decomposition): V is a sum of products of
n1 (N - n1) ~ N^2 and 1 / N^3.

Result: ``{"time", "event", "chi2": float | null, "df": 1, "p": float | null,
"observed_minus_expected": float, "variance": float, "groups": [{"group": label, "n": int},
{...}]}`` (chi2 and p null when V = 0: no event at a time where both groups are at risk);
refused: ``{"suppressed": true, "reason": ...}``, naming a refused group.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import stats

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import FILTER_DISCLOSES, QUERY_SET_GATE, Inputs
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.survival import (
    GROUPS_GATE,
    SORT_DISCLOSES,
    SurvivalRecipe,
    survival_schema,
)
from mpc.protocols import arith, compare, scan
from mpc.sharing import AShare, concat

#: Most rows in the two groups: |error of V| <= n^5 2^-64 = 5.4 at 10^4 (V ~ n / 4).
MAX_ROWS = 10_000


def fraction_bits(n: int) -> int:
    """F with n 2^F < 2^62: the opened sums stay inside the signed ring."""
    return 62 - n.bit_length()


def reciprocals(n: int, rows: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sorted position j: N_j = n - j (0 beyond n), round(2^F / N_j) and
    round(2^F / (N_j^2 (N_j - 1))) (0 where N_j < 2)."""
    if bits > 61 or n * n * n >= 1 << 62:
        raise AnalysisError(f"logrank: {n} rows or 2^{bits} do not fit 64-bit reciprocals")
    at_risk = np.zeros(rows, dtype=np.int64)
    at_risk[:n] = n - np.arange(n)
    one = np.int64(1 << bits)
    inverse = np.zeros(rows, dtype=np.int64)
    weight = np.zeros(rows, dtype=np.int64)
    m = at_risk[:n]
    inverse[:n] = (one + m // 2) // m  # rounded to nearest (halves up)
    several = m >= 2
    cube = m[several] * m[several] * (m[several] - 1)
    weight[:n][several] = (one + cube // 2) // cube
    return at_risk, inverse, weight


class Logrank(SurvivalRecipe):
    name: ClassVar[str] = "logrank"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Log-rank test (chi-square, 1 df) between two groups of a "
        "survival time with events, pooled over the pinned datasets."
    )
    discloses: ClassVar[str] = (
        QUERY_SET_GATE
        + GROUPS_GATE
        + (
            'With "groups": one bit, whether no row lies in both. Per group one bit, whether '
            "its number of events is 0 or >= k (else the release is refused). Otherwise, if "
            "the manifest "
            "declares no range of the time that fits the sort: one bit, whether every time "
            "lies in the sort's key range. Then " + SORT_DISCLOSES + "each group's n, to the "
            "three nodes; O - E of the first group and the variance V (fixed point), one value "
            "each, to the three nodes. The researcher gets n per group, O - E, V, chi2 and p."
        )
        + FILTER_DISCLOSES
    )
    parameters_schema: ClassVar[dict[str, Any]] = survival_schema({})
    #: Most rows in the two groups (the fixed-point error of V grows as n^5 2^-64).
    max_rows: ClassVar[int] = MAX_ROWS

    def validate(self, parameters: dict[str, Any], manifest: Any) -> None:
        super().validate(parameters, manifest)
        by = self.by_info(parameters, manifest)
        count = (
            len(parameters.get("groups", []))
            if by is None
            else 2
            if by.kind == "boolean"
            else len(by.levels or ())
        )
        if count != 2:
            raise AnalysisError(
                "logrank: needs exactly two groups: 'groups' with two "
                "filters, or 'by' a boolean or a categorical column with two "
                f"levels (got {count})"
            )

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        first, second = await self.gate_groups(d, inputs, parameters, query)
        for group in (first, second):
            if group.query.refusal is not None:
                return d.refused(group.query.refusal)
        assert first.rows is not None and second.rows is not None
        gate = query.gate_required()
        if "groups" in parameters:
            overlap = (await arith.dot(d.session, first.rows, second.rows)).reshape(1)
            if not await d.all_within("number of rows in both groups", overlap, 0, 0):
                return d.refused("logrank: the two groups overlap (a row passes both filters)")
        rows = inputs.row_count
        e = inputs.share(self.event_info(parameters, inputs.manifest).name)
        died = await arith.mul(d.session, concat([e, e]), concat([first.rows, second.rows]))
        deaths = concat([died[:rows].sum().reshape(1), died[rows:].sum().reshape(1)])
        safe = await d.safe_residuals("events per group", deaths)
        few = [g.label for g, ok in zip((first, second), safe.allowed, strict=True) if not ok]
        if few:
            k = d.rules.min_cell_count
            return d.refused(
                f"group '{few[0]}': between 1 and {k - 1} events (min_cell_count); O - E "
                "would disclose in which group they are"
            )
        either = first.rows + second.rows
        t, ev, (g,), _ = await self.sorted_rows(d, inputs, parameters, either, [first.rows])
        sizes = []
        for group in (first, second):
            assert group.rows is not None  # groups of "by" or "groups" always have rows
            gated = group.query.gate_required()
            n_share = group.rows.sum().reshape(1)
            sizes.append(await d.open_one(f"group '{group.label}': n", n_share, gated))
        n = sum(sizes)
        if n > self.max_rows:
            return d.refused(
                f"logrank: more than {self.max_rows:,} rows in the two groups; v1 computes V "
                "in a 64-bit ring, whose precision it would lose (see its documentation)"
            )
        bits = fraction_bits(n)
        at_risk, inverse, weight = reciprocals(n, rows, bits)
        s = d.session
        same = await compare.equals(s, t[1:], t[:-1])
        starts = concat([same[:1] * 0 + 1, 1 - same])
        suffix = AShare(
            s.party,
            np.cumsum(g.a[::-1], dtype=np.uint64)[::-1],
            np.cumsum(g.b[::-1], dtype=np.uint64)[::-1],
        )
        squares = await arith.mul(s, suffix, suffix)
        q = suffix * inverse
        w = (suffix * at_risk - squares) * weight
        public_n = suffix * 0 + at_risk
        q_s, w_s, n_s = await scan.broadcast_from_starts(s, starts, [q, w, public_n])
        products = await arith.mul(s, concat([ev, ev, ev]), concat([g, q_s, w_s]))
        eg, eq, ew = products[:rows], products[rows : 2 * rows], products[2 * rows :]
        spread = n_s * -1 + (at_risk * 2 - 1)
        ev_terms = await arith.mul(s, ew, spread)
        o_minus_e = (eg * (1 << bits) - eq).sum().reshape(1)
        variance = ev_terms.sum().reshape(1)
        opened_oe = await d.open_one("O - E of the first group (fixed point)", o_minus_e, gate)
        opened_v = await d.open_one("V (fixed point)", variance, gate)
        oe, v = opened_oe / float(1 << bits), opened_v / float(1 << bits)
        chi2 = oe * oe / v if v > 0 else None
        return {
            "time": parameters["time"],
            "event": parameters["event"],
            "chi2": chi2,
            "df": 1,
            "p": None if chi2 is None else float(stats.chi2.sf(chi2, 1)),
            "observed_minus_expected": oe,
            "variance": v,
            "groups": [
                {"group": first.label, "n": sizes[0]},
                {"group": second.label, "n": sizes[1]},
            ],
        }
