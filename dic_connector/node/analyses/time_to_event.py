"""What ``survival`` and ``logrank`` share: time and event, groups and their gates, the sort.

Parameters ``{"time": <numeric or date column>, "event": <boolean column>}``, optionally
``"by"`` (a categorical or boolean column: one group per level) or ``"groups"`` (labelled
filters, :mod:`.filters`), and ``"filter"``. :class:`SurvivalRecipe` is the template both
recipes follow (:class:`~dic_connector.node.analyses.base.Analysis`):

- **the query set** is the rows where ``time`` and ``event`` are present and the filter
  holds, gated as every query set is (:meth:`~dic_connector.node.analyses.base.Analysis.gate`,
  with ``is_present(event)`` joined to the filter);
- **each group** is a query set of its own (:mod:`.groups`, shared with ``t_test``):
  every contributor >= min_subset_size rows, n_g >= k, the rows outside the group 0 or
  >= k, the query set's rows outside the group and the group's rows outside the query set
  0 or >= k, in one circuit per group; a refusal names the group, never its count;
- **the sort** (:meth:`SurvivalRecipe.sorted_rows`): rows outside a group get the time
  tmax + 1 and no event (one multiplication round), then shuffle-then-sort
  (:func:`mpc.protocols.sort.sort`; Hamada et al. ICISC 2012, Asharov et al. CCS 2022) by
  the key 2 t + (1 - e), so that events come before censorings at equal times (lifelines'
  ties, Kaplan and Meier 1958) and the group's rows take positions 0..n-1. A declared time
  range that fits the key gives it; otherwise every time is checked under MPC to lie in
  the widest range that fits, opening only the all-in-range bit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from dic_connector.errors import DataValidationError
from dic_connector.node.analyses.base import (
    NUMERIC_KINDS,
    SORT_MEMORY_PER_ROW,
    Analysis,
    Inputs,
    named_column,
    present_query,
)
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet
from dic_connector.node.analyses.filters import Filter, referenced_columns
from dic_connector.node.analyses.groups import (
    GROUP_PROPERTIES,
    Group,
    by_columns,
    by_info,
    gate_groups,
    group_columns,
    group_filters,
    group_indicators,
    group_typed_names,
    groups_size,
    validate_groups,
)
from dic_connector.node.analyses.manifest import (
    ColumnInfo,
    present_column,
)
from dic_connector.node.analyses.median import key_range
from mpc.protocols import arith, sort
from mpc.sharing import AShare, concat

SORT_DISCLOSES = (
    "the comparison bits of a sort of the obliviously shuffled rows (data-independent), to "
    "the three nodes; "
)


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
            **GROUP_PROPERTIES,
            **extra,
        },
        "required": ["time", "event"],
        "additionalProperties": False,
    }


class SurvivalRecipe(Analysis):
    memory_per_row: ClassVar[int] = SORT_MEMORY_PER_ROW
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
        return named_column(self.name, key, parameters["column"], kinds, manifest)

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
        return by_info(self.name, parameters, manifest)

    def group_filters(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> list[tuple[str, Filter]]:
        return group_filters(self.name, parameters, manifest)

    def base_parameters(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
    ) -> dict[str, Any]:
        """The query set as the base template reads it: ``time`` present, and the filter
        (with ``is_present`` of ``event`` when it has missing values)."""
        return present_query(parameters["time"], [parameters["event"]], parameters, manifest)

    def validate(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]) -> None:
        self.check_parameters(parameters)
        self.time_info(parameters, manifest)
        self.event_info(parameters, manifest)
        validate_groups(self.name, parameters, manifest)
        self.filter_of(parameters, manifest)

    def table_size(self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
                   ) -> tuple[str, int] | None:
        return groups_size(self.name, parameters, manifest)

    # -- columns read ------------------------------------------------------------------

    def columns(
        self, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo] | None = None
    ) -> list[str]:
        self.check_parameters(parameters)
        if manifest is None:
            named = [parameters["time"], parameters["event"]]
            named += referenced_columns(parameters.get("filter"))
            return list(dict.fromkeys(named + group_typed_names(parameters)))
        out: list[str] = []
        for info in (self.time_info(parameters, manifest), self.event_info(parameters, manifest)):
            present = present_column(manifest, info.name)
            out += [info.name] + ([present] if present else [])
        out += by_columns(self.name, parameters, manifest)
        f = self.filter_of(parameters, manifest)
        out += list(f.columns) if f is not None else []
        out += group_columns(self.name, parameters, manifest)
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
        return await group_indicators(d, inputs, self.name, parameters)

    async def gate_groups(
        self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any], query: QuerySet
    ) -> list[Group]:
        """The request's groups, each gated as a query set (:mod:`.groups`); one group
        labelled None (the query set itself) without ``by`` or ``groups``."""
        return await gate_groups(d, inputs, self.name, parameters, query)

    # -- the sort ----------------------------------------------------------------------

    def time_range(self, info: ColumnInfo, rows: int) -> tuple[int, int, bool]:
        """(tmin, tmax, trusted): the encoded times the sort keys 2 t + (1 - e) admit,
        with tmax + 1 for rows outside the group, and whether the declared range alone
        guarantees them."""
        return key_range(info, rows, self.name, halvings=2, reserve=1)

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
