"""``survival`` v1: Kaplan-Meier S(t) at given times and the median survival, per group.

Kaplan and Meier (JASA 53, 1958): S(t) = prod over distinct event times t_i <= t of
(1 - d_i / n_i), d_i events at t_i among the n_i rows still at risk (time >= t_i). Ties as
lifelines' ``KaplanMeierFitter`` treats them: rows censored at t_i are at risk at t_i
(events before censorings).

**Protocol** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3), per group:

1. Disclosure control first (:meth:`~dic_connector.node.analyses.base.Analysis.gate`): the
   query set is the rows where ``time`` and ``event`` are present and the filter holds, with
   its complements; then each group (a level of ``by``, or a filter of ``groups``) is a query
   set of its own, gated the same way (:func:`gate_groups`): every contributor >=
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

**Left out:** the confidence interval of the median (Brookmeyer and Crowley 1982, as
lifelines' ``median_survival_times(confidence_interval_)``): it needs the exponential
Greenwood bounds exp(-exp(log(-log S) -/+ z sqrt(G) / log S)) at every row, i.e. logarithms,
square roots and divisions of secrets, which :mod:`mpc.protocols` does not offer; the
Greenwood sum itself telescopes like the factors (e_j / ((n - j)(n - j - 1)), public
coefficients), so it is the natural next step. ``median_ci`` is null.

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

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.base import (
    FILTER_DISCLOSES,
    NUMERIC_KINDS,
    QUERY_SET_GATE,
    Analysis,
    Inputs,
)
from dic_connector.node.analyses.disclosure import Complement, Disclosure, Gate, QuerySet
from dic_connector.node.analyses.filters import (
    Filter,
    check_filter_shape,
    evaluate,
    parse_filter,
    referenced_columns,
)
from dic_connector.node.analyses.manifest import (
    TYPED_KINDS,
    ColumnInfo,
    one_hot_columns,
    present_column,
)
from mpc.protocols import arith, compare, sort
from mpc.sharing import AShare, concat

#: Most times one request may ask S(t) at.
MAX_TIMES = 20
#: Most groups (levels of ``by``, or ``groups``).
MAX_GROUPS = 8
#: Fractional bits of the log factors.
LOG_FRACTION_BITS = 40
#: log S after the last row at risk dies: exp of it is 0.0.
LOG_ZERO = -(1 << 10)
#: log S at or below this is reported as S = 0.
LOG_ZERO_BELOW = LOG_ZERO // 2
#: The median's tolerance on log(1/2), in units of 2^-LOG_FRACTION_BITS.
MEDIAN_TOLERANCE = 1 << (LOG_FRACTION_BITS - 30)

#: What a group gate opens (for the ``discloses`` texts).
GROUPS_GATE = (
    'With groups (a level of "by", or a filter of "groups"): per group the same bits '
    "for the group's rows of the query set (each contributor >= min_subset_size, n_g >= k, "
    "rows outside the group 0 or >= k); a group that fails is refused by name. "
)
SORT_DISCLOSES = (
    "the comparison bits of a sort of the obliviously shuffled rows (data-independent), to "
    "the three nodes; "
)

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Group:
    """One group of a request: its label (None: the whole query set) and its 0/1 share of
    the query set's rows (None: every row of it)."""

    label: str | None
    rows: AShare | None
    query: QuerySet


def survival_schema(extra: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters of a survival recipe: time, event, by or groups, and ``extra``."""
    return {
        "type": "object",
        "properties": {
            "time": {
                "type": "string",
                "minLength": 1,
                "description": "a numeric or date typed column: follow-up time",
            },
            "event": {
                "type": "string",
                "minLength": 1,
                "description": "a boolean typed column: 1 = event, 0 = censored",
            },
            "by": {
                "type": "string",
                "minLength": 1,
                "description": "a categorical or boolean typed column: one group per level",
            },
            "groups": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_GROUPS,
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "minLength": 1, "maxLength": 64},
                        "filter": {},
                    },
                    "required": ["label", "filter"],
                    "additionalProperties": False,
                },
                "description": "groups as filters, each with a label",
            },
            **extra,
        },
        "required": ["time", "event"],
        "additionalProperties": False,
    }


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


class SurvivalRecipe(Analysis):
    """What ``survival`` and ``logrank`` share: time/event/by/groups, gates, sorting."""

    filterable: ClassVar[bool] = True
    column_kinds: ClassVar[frozenset[str]] = NUMERIC_KINDS

    # -- parameters --------------------------------------------------------------------

    def _typed(
        self,
        parameters: dict[str, Any],
        key: str,
        kinds: frozenset[str],
        manifest: Mapping[str, ColumnInfo],
    ) -> ColumnInfo:
        return self.typed_column({"column": parameters[key]}, manifest, key, kinds)

    def typed_column(
        self,
        parameters: dict[str, Any],
        manifest: Mapping[str, ColumnInfo],
        key: str = "time",
        kinds: frozenset[str] = NUMERIC_KINDS,
    ) -> ColumnInfo:
        column = parameters["column"]
        info = manifest.get(column)
        if info is None or info.kind not in TYPED_KINDS:
            typed = sorted(n for n, i in manifest.items() if i.kind in TYPED_KINDS)
            raise AnalysisError(
                f"{self.name}: parameter '{key}': unknown column '{column}'; "
                "expected one of the dataset's typed columns: "
                f"{', '.join(typed) or '(none)'}"
            )
        if info.kind not in kinds:
            raise AnalysisError(
                f"{self.name}: parameter '{key}': '{column}' is {info.kind}; "
                f"expected a {' or '.join(sorted(kinds))} column"
            )
        return info

    def time_info(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> ColumnInfo:
        return self._typed(parameters, "time", NUMERIC_KINDS, manifest)

    def event_info(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> ColumnInfo:
        return self._typed(parameters, "event", frozenset({"boolean"}), manifest)

    def by_info(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> ColumnInfo | None:
        if "by" not in parameters:
            return None
        info = self._typed(parameters, "by", frozenset({"categorical", "boolean"}), manifest)
        if info.kind == "categorical":
            if len(info.levels) > MAX_GROUPS:
                raise AnalysisError(
                    f"{self.name}: parameter 'by': '{info.name}' has {len(info.levels)} "
                    f"levels; at most {MAX_GROUPS} groups (use 'groups' to merge levels)"
                )
            for name in one_hot_columns(info):
                if name not in manifest:
                    raise AnalysisError(
                        f"{self.name}: parameter 'by': categorical "
                        f"'{info.name}' lacks its one-hot column '{name}'"
                    )
        return info

    def group_filters(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> list[tuple[str, Filter]]:
        out = []
        for i, group in enumerate(parameters.get("groups", [])):
            try:
                check_filter_shape(group["filter"])
                out.append((group["label"], parse_filter(group["filter"], manifest)))
            except AnalysisError as exc:
                raise AnalysisError(f"{self.name}: parameter 'groups/{i}/{exc}") from None
        return out

    def base_parameters(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> dict[str, Any]:
        """The query set as the base template reads it: ``time`` present, and the filter
        (with ``is_present`` of ``event`` when it has missing values)."""
        parts = []
        if present_column(manifest, parameters["event"]) is not None:
            parts.append({"op": "is_present", "column": parameters["event"]})
        if "filter" in parameters:
            parts.append(parameters["filter"])
        out: dict[str, Any] = {"column": parameters["time"]}
        if len(parts) == 1:
            out["filter"] = parts[0]
        elif parts:
            out["filter"] = {"op": "&", "args": parts}
        return out

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        self.check_parameters(parameters)
        self.time_info(parameters, manifest)
        self.event_info(parameters, manifest)
        if "by" in parameters and "groups" in parameters:
            raise AnalysisError(f"{self.name}: give either 'by' or 'groups', not both")
        self.by_info(parameters, manifest)
        labels = [g["label"] for g in parameters.get("groups", [])]
        if len(set(labels)) != len(labels):
            raise AnalysisError(f"{self.name}: parameter 'groups': labels must be distinct")
        self.group_filters(parameters, manifest)
        self.filter_of(parameters, manifest)

    # -- columns read ------------------------------------------------------------------

    def columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo] | None = None
    ) -> list[str]:
        self.check_parameters(parameters)
        if manifest is None:
            named = [parameters["time"], parameters["event"]]
            named += [parameters["by"]] if "by" in parameters else []
            named += referenced_columns(parameters.get("filter"))
            for group in parameters.get("groups", []):
                named += referenced_columns(group["filter"])
            return list(dict.fromkeys(named))
        out: list[str] = []
        infos = [self.time_info(parameters, manifest), self.event_info(parameters, manifest)]
        by = self.by_info(parameters, manifest)
        for info in infos + ([by] if by is not None else []):
            present = present_column(manifest, info.name)
            values = one_hot_columns(info) if info.kind == "categorical" else [info.name]
            out += values + ([present] if present else [])
        f = self.filter_of(parameters, manifest)
        out += list(f.columns) if f is not None else []
        for _, g in self.group_filters(parameters, manifest):
            out += list(g.columns)
        return list(dict.fromkeys(out))

    def typed_columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> list[str]:
        names = self.columns(parameters, manifest)
        typed = {manifest[n].column if n in manifest else n for n in names}
        return sorted(typed | {parameters["time"], parameters["event"]})

    # -- gates -------------------------------------------------------------------------

    async def gate(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]) -> QuerySet:
        return await super().gate(d, inputs, self.base_parameters(parameters, inputs.manifest))

    async def group_indicators(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any]
    ) -> list[tuple[str, AShare]]:
        """(label, 0/1 share per row) of each group of the request ([] without groups)."""
        by = self.by_info(parameters, inputs.manifest)
        if by is not None and by.kind == "categorical":
            return [
                (level, inputs.share(name))
                for level, name in zip(by.levels, one_hot_columns(by), strict=True)
            ]
        if by is not None:
            value = inputs.share(by.name)
            flag = present_column(inputs.manifest, by.name)
            present = inputs.share(flag) if flag is not None else None
            false = (1 - value) if present is None else present - value
            return [("true", value), ("false", false)]
        out = []
        for label, f in self.group_filters(parameters, inputs.manifest):
            out.append((label, await evaluate(d.session, f, inputs.share, inputs.row_count)))
        return out

    async def gate_groups(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> list[Group]:
        """The request's groups, each gated as a query set (see the module doc); one group
        labelled None (the query set itself) without ``by`` or ``groups``."""
        indicators = await self.group_indicators(d, inputs, parameters)
        if not indicators:
            return [Group(None, query.rows, query)]
        stacked = concat([x for _, x in indicators])
        if query.rows is not None:
            stacked = await arith.mul(d.session, stacked, concat([query.rows] * len(indicators)))
        rows = inputs.row_count
        within = inputs.segment_sums(query.rows) if query.rows is not None else None
        out = []
        for i, (label, _) in enumerate(indicators):
            member = stacked[i * rows : (i + 1) * rows]
            sizes = inputs.segment_sums(member)
            outside = (
                []
                if within is None
                else [Complement(f"rows of the query set outside group '{label}'", within - sizes)]
            )
            gated = await d.query_set(
                sizes, inputs.sites, rows, complement=True, complements=outside
            )
            if gated.refusal is not None:
                gated = dataclasses.replace(gated, refusal=f"group '{label}': {gated.refusal}")
            out.append(Group(label, member, gated))
        return out

    # -- the sort ----------------------------------------------------------------------

    def time_range(self, info: ColumnInfo, rows: int) -> tuple[int, int, bool]:
        """(tmin, tmax, trusted): the encoded times the sort keys 2 t + (1 - e) admit,
        with tmax + 1 for rows outside the group, and whether the declared range alone
        guarantees them."""
        widest = 63 - sort.index_bits(max(rows, 1))
        key_low, key_high = -(1 << (widest - 2)), (1 << (widest - 2)) - 2
        low, high = info.encoded_bounds()
        if low is not None and high is not None and key_low <= low and high <= key_high:
            return low, high, True
        low = key_low if low is None else max(low, key_low)
        high = key_high if high is None else min(high, key_high)
        if low > high:
            raise AnalysisError(
                f"{self.name}: column '{info.name}' declares a range that "
                f"does not fit a {widest}-bit sort key over {rows} rows"
            )
        return low, high, False

    async def sorted_rows(
        self,
        d: Disclosure,
        inputs: Inputs,
        parameters: dict[str, Any],
        rows: AShare | None,
        extra: Sequence[AShare] = (),
    ) -> tuple[AShare, AShare, list[AShare], int]:
        """Times and events of the rows in ``rows`` (others moved last), sorted by time,
        events first, with ``extra`` payload columns; and tmin."""
        time = self.time_info(parameters, inputs.manifest)
        x = inputs.share(time.name)
        e = inputs.share(self.event_info(parameters, inputs.manifest).name)
        tmin, tmax, trusted = self.time_range(time, inputs.row_count)
        sentinel = tmax + 1
        if rows is None:
            t, ev = x, e
        else:
            n = inputs.row_count
            both = await arith.mul(d.session, concat([rows, rows]), concat([x - sentinel, e]))
            t, ev = both[:n] + sentinel, both[n:]
        if not trusted and not await d.all_within(f"'{time.name}' time", t, tmin, sentinel):
            raise DataValidationError(
                f"{self.name}: column '{time.name}' holds a value outside [{tmin}, {tmax}] "
                f"(encoded, scale {time.scale}), the range its sort keys admit for "
                f"{inputs.row_count} rows"
            )
        key = t * 2 - ev + 1
        bits = sort.key_bits_for(2 * tmin, 2 * sentinel + 1)
        with d.protocol(
            "sort comparison bits of obliviously shuffled rows",
            "data-independent: distinct keys in a random order",
        ):
            _, payload = await sort.sort(d.session, key, [t, ev, *extra], bits)
        return payload[0], payload[1], payload[2:], tmin


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
        s, rows = d.session, inputs.row_count
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
        weighted = ev * log_factors(n, rows)  # e_j c_j, local
        asked = parameters.get("times", [])
        times = [float(decimal_time(v)) for v in asked]
        sentinel = self.time_range(info, rows)[1] + 1
        thresholds = [min(max(encoded_time(v, info.scale) + 1, tmin), sentinel + 1) for v in asked]
        logs: list[AShare] = []
        released: list[bool] = []
        if thresholds:
            k = len(thresholds)
            wide = concat([t] * k)
            limits = np.repeat(np.asarray(thresholds, dtype=np.int64), rows)
            before = await compare.less_than_public(s, wide, limits)
            picked = await arith.mul(s, concat([before, before]), concat([weighted] * k + [ev] * k))
            sums = [picked[i * rows : (i + 1) * rows].sum().reshape(1) for i in range(2 * k)]
            logs = sums[:k]
            released = await self._released(d, prefix, thresholds, sums[k:])
        survival: list[float | None] = []
        for v, log_share, allowed in zip(times, logs, released, strict=True):
            if not allowed:
                survival.append(None)
                continue
            opened = await d.open_one(f"{prefix}log S({v:g})", log_share, gate)
            survival.append(survival_of(opened))
        median: float | None = None
        if parameters.get("median", False):
            median = await self._median(d, t, weighted, tmin, info.scale, prefix, gate)
        return {
            "group": group.label,
            "n": n,
            "times": times,
            "survival": survival,
            "median": median,
            "median_ci": None,
        }

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
