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
- At each position j, in fixed point: q_j = n1_j round(2^F / N_j) (n1/N with F = 62 -
  bits(n) fractional bits, local); q(1 - q) with A bits, from q cut to A bits by an exact
  right shift (:func:`mpc.protocols.shift.shift_right`: bit decomposition, 8 rounds), one
  multiplication and another exact shift; the public N_j and round(2^48 / (N_j - 1)).
  These four are copied from the first row of each tie to the whole tie by
  :func:`mpc.protocols.scan.broadcast_from_starts` (ceil(log2 N) rounds), so every row
  knows n, n1/n, q(1 - q) and 1/(n - 1) of its time.
- With events first in a tie of d events starting at n at risk, the sum over its event rows
  of (2 N_j - n - 1) is d (n - d). Hence
  O - E = sum_j e_j (g_j - q_start / 2^F) and
  V = sum_j e_j [q (1 - q)]_start [(2 N_j - N_start - 1) / (N_start - 1)],
  the last factor shifted exactly to B bits; A + B = 64 - bits(n) keeps V 2^(A+B) <= n/4
  2^(A+B) inside the ring (three multiplication rounds), summed locally.

**What opens**: the gate bits; the sort's data-independent comparison bits; the two groups'
n; O - E (of group 1) and V, one value each (the researcher gets them with chi2 and p). No
event count, risk set or per-time term is opened.

**Fixed-point error.** O - E: only the public 1 / N_j is rounded (1/2 unit of 2^-F,
2^F >= 2^61 / n), so |error| <= n^3 2^-62 (3e-14 at n = 48, 2e-4 at n = 10^5). V: the
shifts round down, q(1 - q) is off by at most 3 2^-A and the tie factor by 2^-B, so each
event row is off by at most 7 2^-A and |error of V| <= 7 d 2^-A over d events (A = 29 at
n = 48: 2e-7 for the pilot's 17 deaths; A = 23 at n = 10^5). Measured at n = 10^5 (random
data, 60 % events, 599 distinct times): V 14,940.858 against 14,940.862 exactly, chi2
3e-7 relative off. (Without the shifts, a 64-bit ring cannot hold n1 (N - n1) ~ N^2 times
a rounded 1 / N^3: that version gave V = 6,635 there.) More than :data:`MAX_ROWS` rows are
refused after opening n (the refusal says only that n exceeds it).

Result: ``{"time", "event", "chi2": float | null, "df": 1, "p": float | null,
"observed_minus_expected": float, "variance": float, "groups": [{"group": label, "n": int},
{...}]}`` (chi2 and p null when V = 0: no event at a time where both groups are at risk);
refused: ``{"suppressed": true, "reason": ...}``, naming a refused group.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import FILTER_DISCLOSES, QUERY_SET_GATE, Inputs
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.groups import (
    GROUPS_GATE,
    overlap_refusal,
    require_two_groups,
)
from dic_connector.node.analyses.time_to_event import (
    SORT_DISCLOSES,
    SurvivalRecipe,
    survival_schema,
)
from mpc.protocols import arith, compare, scan, shift
from mpc.sharing import AShare, concat

#: Most rows in the two groups (V keeps >= 21 fractional bits per factor up to here).
MAX_ROWS = 1 << 20
#: Fractional bits of the public 1 / (N - 1).
RECIPROCAL_BITS = 48


def fraction_bits(n: int) -> int:
    """F with n 2^F < 2^62: the opened sums stay inside the signed ring."""
    return 62 - n.bit_length()


def variance_bits(n: int) -> tuple[int, int]:
    """(A, B): fractional bits of q (1 - q) and of the tie factor; V 2^(A+B) <= n / 4 2^(A+B)
    stays below 2^62."""
    total = 64 - max(n, 4).bit_length()
    return total // 2, total - total // 2


def reciprocals(n: int, rows: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sorted position j: N_j = n - j (0 beyond n), round(2^F / N_j) and
    round(2^RECIPROCAL_BITS / (N_j - 1)) (0 where N_j < 2), rounded to nearest."""
    if not 1 <= bits <= 61:
        raise AnalysisError(f"logrank: 2^{bits} does not fit 64-bit reciprocals")
    at_risk = np.zeros(rows, dtype=np.int64)
    at_risk[:n] = n - np.arange(n)
    m = at_risk[:n]
    inverse = np.zeros(rows, dtype=np.int64)
    inverse[:n] = (np.int64(1 << bits) + m // 2) // m
    factor = np.zeros(rows, dtype=np.int64)
    several = np.flatnonzero(m >= 2)
    below = m[several] - 1
    factor[several] = (np.int64(1 << RECIPROCAL_BITS) + below // 2) // below
    return at_risk, inverse, factor


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
        require_two_groups(self.name, parameters, manifest)

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        first, second = await self.gate_groups(d, inputs, parameters, query)
        for group in (first, second):
            if group.query.refusal is not None:
                return d.refused(group.query.refusal)
        assert first.rows is not None and second.rows is not None
        gate = query.gate_required()
        overlap = await overlap_refusal(d, self.name, parameters, first, second)
        if overlap is not None:
            return d.refused(overlap)
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
        a_bits, b_bits = variance_bits(n)
        at_risk, inverse, factor = reciprocals(n, rows, bits)
        s = d.session
        same = await compare.equals(s, t[1:], t[:-1])
        starts = concat([same[:1] * 0 + 1, 1 - same])
        suffix = AShare(
            s.party,
            np.cumsum(g.a[::-1], dtype=np.uint64)[::-1],
            np.cumsum(g.b[::-1], dtype=np.uint64)[::-1],
        )
        q = suffix * inverse  # n1 / N, F fractional bits
        coarse = await shift.shift_right(s, q, bits - a_bits, a_bits + 2)
        squares = await arith.mul(s, coarse, coarse)
        spread_q = await shift.shift_right(s, coarse * (1 << a_bits) - squares, a_bits, a_bits)
        public = [suffix * 0 + at_risk, suffix * 0 + factor]
        q_s, a_s, n_s, r_s = await scan.broadcast_from_starts(s, starts, [q, spread_q, *public])
        spread = n_s * -1 + (at_risk * 2 - 1)  # 2 N_j - N_start - 1
        products = await arith.mul(s, concat([ev, ev, ev, spread]), concat([g, q_s, a_s, r_s]))
        eg, eq, ea = products[:rows], products[rows : 2 * rows], products[2 * rows : 3 * rows]
        tie = await shift.shift_right(s, products[3 * rows :], RECIPROCAL_BITS - b_bits, b_bits + 3)
        v_terms = await arith.mul(s, ea, tie)
        o_minus_e = (eg * (1 << bits) - eq).sum().reshape(1)
        variance = v_terms.sum().reshape(1)
        opened_oe = await d.open_one("O - E of the first group (fixed point)", o_minus_e, gate)
        opened_v = await d.open_one("V (fixed point)", variance, gate)
        oe = opened_oe / float(1 << bits)
        v = opened_v / float(1 << (a_bits + b_bits))
        # deferred: scipy.stats takes seconds to import
        from scipy import stats
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
