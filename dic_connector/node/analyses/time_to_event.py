"""What ``survival`` and ``logrank`` share: time and event, groups and their gates, the sort.

Parameters ``{"time": <numeric or date column>, "event": <boolean column>}``, optionally
``"by"`` (a categorical or boolean column: one group per level) or ``"groups"`` (labelled
filters, :mod:`.filters`), and ``"filter"``. :class:`SurvivalRecipe` is the template both
recipes follow (:class:`~dic_connector.node.analyses.base.Analysis`):

- **the query set** is the rows where ``time`` and ``event`` are present and the filter
  holds, gated as every query set is (:meth:`~dic_connector.node.analyses.base.Analysis.gate`,
  with ``is_present(event)`` joined to the filter);
- **each group** is a query set of its own (:meth:`SurvivalRecipe.gate_groups`): every
  contributor >= min_subset_size rows, n_g >= k, the rows outside the group 0 or >= k, and
  the query set's rows outside the group 0 or >= k, in one circuit per group; a refusal
  names the group, never its count;
- **the sort** (:meth:`SurvivalRecipe.sorted_rows`): rows outside a group get the time
  tmax + 1 and no event (one multiplication round), then shuffle-then-sort
  (:func:`mpc.protocols.sort.sort`; Hamada et al. ICISC 2012, Asharov et al. CCS 2022) by
  the key 2 t + (1 - e), so that events come before censorings at equal times (lifelines'
  ties, Kaplan and Meier 1958) and the group's rows take positions 0..n-1. A declared time
  range that fits the key gives it; otherwise every time is checked under MPC to lie in
  the widest range that fits, opening only the all-in-range bit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from dic_connector.errors import AnalysisError, DataValidationError
from dic_connector.node.analyses.base import (
    NUMERIC_KINDS,
    Analysis,
    Inputs,
)
from dic_connector.node.analyses.disclosure import Complement, Disclosure, QuerySet
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
from mpc.protocols import arith, sort
from mpc.sharing import AShare, concat

#: Most groups (levels of ``by``, or ``groups``).
MAX_GROUPS = 8

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
