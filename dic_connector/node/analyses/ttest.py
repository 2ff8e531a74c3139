"""``t_test`` v1: Welch's two-sample t-test of a numeric or date column between two groups.

Welch (1947), Satterthwaite (1946); as ``scipy.stats.ttest_ind(a, b, equal_var=False,
alternative=...)``: with per group n_g, mean m_g and sample variance s_g^2,

    t = (m_1 - m_2) / sqrt(s_1^2 / n_1 + s_2^2 / n_2),
    df = (s_1^2/n_1 + s_2^2/n_2)^2 / ((s_1^2/n_1)^2 / (n_1 - 1) + (s_2^2/n_2)^2 / (n_2 - 1)),

and p from Student's t with df degrees of freedom (two-sided: 2 P(T > |t|); ``less``:
P(T < t); ``greater``: P(T > t)), in plaintext (scipy).

**Groups** (:mod:`.groups`): ``"by"``, a boolean or a categorical column with exactly two
levels, or ``"groups"``, two labelled filters, which must be disjoint (one bit opened:
whether no row passes both). The query set is the rows where the column is present and
the request's ``"filter"`` holds, gated as every query set is; **each group** is then a
query set of its own (each contributor >= min_subset_size rows, n_g >= k, the rows outside
the group 0 or >= k, the query set's rows outside it 0 or >= k). A group that fails
refuses the whole test, naming the group, never its count. Group 1 is the first level of
``by`` (``"true"`` for a boolean) or the first of ``groups``: t and the mean difference
are group 1 minus group 2, as ``ttest_ind(group_1, group_2)``.

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3). There is no
secret division or square root in :mod:`mpc.protocols`, so, as ``summary`` does for one
query set (:mod:`.summary`): y_g = x * member_g for both groups (one multiplication round),
y_g^2 (one more), then locally the sums. The sum of squares is overflow-checked as in
``summary``: a declared range that keeps every square sum below 2^63, or else one bit,
whether every value lies in [-B, B] with B = floor(sqrt((2^63 - 1) / N)) over the N rows
(:func:`~dic_connector.node.analyses.summary.checked_for_squares`).

**What opens**: the gate bits (query set, each group, the overlap bit of two filters,
the range bit); then per group n, the sum and the sum of squares, three values to the
three nodes and the researcher: exactly what two ``summary`` releases over the two
groups open (given n, the same information as the mean and the sample variance). t, df
and p are computed from them in plaintext. Since the opened sums are exact integers, the
only error is float rounding in the last step (relative ~1e-15 against the exact
rationals).

Result: ``{"column", "alternative", "t", "df", "p", "mean_difference", "groups": [{"group",
"n", "mean", "variance", "sd"}, {...}]}``; ``t``, ``df`` and ``p`` are null, with a
``"reason"``, when a group has a single row (its variance is undefined) or both groups are
constant (the standard error is 0; scipy gives +-inf or nan there). Refused:
``{"suppressed": true, "reason": ...}``, naming a refused group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

from dic_connector.node.analyses.base import (
    ALTERNATIVES,
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release
from dic_connector.node.analyses.groups import (
    GROUP_PROPERTIES,
    GROUPS_GATE,
    gate_groups,
    group_columns,
    group_typed_names,
    groups_size,
    overlap_refusal,
    require_two_groups,
    validate_groups,
)
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.summary import checked_for_squares, sample_variance
from mpc.protocols import arith
from mpc.sharing import concat


def p_value(statistic: float, distribution: Any, alternative: str) -> float:
    """The p-value of ``statistic`` under a continuous scipy ``distribution`` symmetric
    about 0, as scipy computes it for ``alternative``."""
    if alternative == "less":
        return float(distribution.cdf(statistic))
    if alternative == "greater":
        return float(distribution.sf(statistic))
    return float(min(1.0, 2 * distribution.sf(abs(statistic))))


def welch(groups: list[tuple[int, int, int]], scale: int, alternative: str) -> dict[str, Any]:
    """t, df, p and the mean difference from each group's (n, sum, sum of squares) of
    fixed-point integers (value * 10^scale), exactly up to the last float steps."""
    (n1, s1, _), (n2, s2, _) = groups
    unit = 10**scale
    difference = Fraction(s1, n1 * unit) - Fraction(s2, n2 * unit)
    out: dict[str, Any] = {"t": None, "df": None, "p": None, "mean_difference": float(difference)}
    variances = [sample_variance(n, s, q, scale) for n, s, q in groups]
    if variances[0] is None or variances[1] is None:
        return out | {"reason": "a group has a single row: its sample variance is undefined"}
    w1, w2 = variances[0] / n1, variances[1] / n2
    se2 = w1 + w2
    if se2 == 0:
        return out | {"reason": "both groups are constant: the standard error is 0"}
    t = float(difference) / math.sqrt(float(se2))
    # deferred: scipy.stats takes seconds to import
    from scipy import stats
    df = float(se2 * se2 / (w1 * w1 / (n1 - 1) + w2 * w2 / (n2 - 1)))
    return out | {"t": t, "df": df, "p": p_value(t, stats.t(df), alternative)}


class TTest(Analysis):
    name: ClassVar[str] = "t_test"
    version: ClassVar[str] = "1"
    summary: ClassVar[str] = (
        "Welch's two-sample t-test of a numeric or date column between two groups (a "
        "two-level column, or two filters), pooled over the pinned datasets."
    )
    discloses: ClassVar[str] = (
        QUERY_SET_GATE
        + GROUPS_GATE
        + (
            'With "groups": one bit, whether no row lies in both. Otherwise, if the manifest '
            "declares no range that rules out an overflow of the 64-bit sums of squares: one "
            "bit, whether every value lies in the range in which they cannot overflow. Then "
            "per group n, the sum and the sum of squares of its values, to the three nodes "
            "and then to the researcher: exactly what two summary releases over the two "
            "groups open (equivalently: per group n, the mean and the sample variance). The "
            "researcher gets those, t, the Welch-Satterthwaite df and p."
        )
        + FILTER_DISCLOSES
    )
    filterable: ClassVar[bool] = True
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS
    parameters_schema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "column": {
                "type": "string",
                "minLength": 1,
                "description": "a numeric or date typed column",
            },
            **GROUP_PROPERTIES,
            "alternative": {
                "enum": list(ALTERNATIVES),
                "description": "as scipy.stats.ttest_ind (default two-sided)",
            },
        },
        "required": ["column"],
        "additionalProperties": False,
    }

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        super().validate(parameters, manifest)
        validate_groups(self.name, parameters, manifest)
        require_two_groups(self.name, parameters, manifest)

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int] | None:
        return groups_size(self.name, parameters, manifest)

    def columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo] | None = None
    ) -> list[str]:
        out = super().columns(parameters, manifest)
        if manifest is None:
            return list(dict.fromkeys(out + group_typed_names(parameters)))
        return list(dict.fromkeys(out + group_columns(self.name, parameters, manifest)))

    async def compute(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> dict[str, Any] | Release:
        info = self.typed_column(parameters, inputs.manifest)
        first, second = await gate_groups(d, inputs, self.name, parameters, query)
        for group in (first, second):
            if group.query.refusal is not None:
                return d.refused(group.query.refusal)
        assert first.rows is not None and second.rows is not None
        overlap = await overlap_refusal(d, self.name, parameters, first, second)
        if overlap is not None:
            return d.refused(overlap)
        x = await checked_for_squares(d, inputs, info, self.name)
        rows = inputs.row_count
        y = await arith.mul(d.session, concat([x, x]), concat([first.rows, second.rows]))
        squares = await arith.mul(d.session, y, y)
        opened: list[tuple[int, int, int]] = []
        for i, group in enumerate((first, second)):
            assert group.rows is not None
            gate = group.query.gate_required()
            part = slice(i * rows, (i + 1) * rows)
            name = f"group '{group.label}': "
            n = await d.open_one(f"{name}n", group.rows.sum().reshape(1), gate)
            total = await d.open_one(f"{name}sum", y[part].sum().reshape(1), gate)
            sq = await d.open_one(f"{name}sum of squares", squares[part].sum().reshape(1), gate)
            opened.append((n, total, sq))
        alternative = parameters.get("alternative", "two-sided")
        described = []
        for group, (n, total, sq) in zip((first, second), opened, strict=True):
            variance = sample_variance(n, total, sq, info.scale)
            described.append(
                {
                    "group": group.label,
                    "n": n,
                    "mean": float(Fraction(total, n * 10**info.scale)),
                    "variance": None if variance is None else float(variance),
                    "sd": None if variance is None else math.sqrt(float(variance)),
                }
            )
        return {
            "column": info.name,
            "alternative": alternative,
            **welch(opened, info.scale, alternative),
            "groups": described,
        }
