"""Groups of a request (``"by"`` or ``"groups"``), each gated as a query set of its own.

What ``survival``, ``logrank`` and ``t_test`` share (DESIGN.md §5). A request names its
groups either by ``"by"``, a categorical column (one group per level, its one-hot 0/1
column) or a boolean (groups ``"true"`` and ``"false"``), or by ``"groups"``, labelled
filters (:mod:`.filters`), each computed under MPC as a 0/1 share per row. A row whose
``by`` is missing is in no group.

**Each group is a query set** (:func:`gate_groups`): its rows are the group's 0/1 shares
times the request's query set (one multiplication round for all groups), and one circuit
per group (:meth:`~dic_connector.node.analyses.disclosure.Disclosure.query_set`) checks that
every contributor has >= min_subset_size of them, n_g >= k, the rows outside the group are
0 or >= k, and, unless the query set is every row, the query set's rows outside the group
and the group's rows outside the query set (where the column is missing or the filter
fails: ``count`` with the group's filter minus n_g would count them) are 0 or >= k. A refusal names the
group by its label, never its count. Two groups given as filters may overlap; a recipe
that needs disjoint groups checks it with :func:`overlap_refusal` (one bit: whether no
row lies in both, :meth:`~dic_connector.node.analyses.disclosure.Disclosure.all_within`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Inputs, named_column
from dic_connector.node.analyses.disclosure import Complement, Disclosure, QuerySet
from dic_connector.node.analyses.filters import (
    Filter,
    check_filter_shape,
    evaluate,
    parse_filter,
    referenced_columns,
)
from dic_connector.node.analyses.manifest import ColumnInfo, one_hot_columns, present_column
from mpc.protocols import arith
from mpc.sharing import AShare, concat

#: Most groups (levels of ``by``, or ``groups``).
MAX_GROUPS = 8

#: What a group gate opens (for the ``discloses`` texts).
GROUPS_GATE = (
    'With groups (a level of "by", or a filter of "groups"): per group the same bits '
    "for the group's rows of the query set (each contributor >= min_subset_size, n_g >= k, "
    "rows outside the group 0 or >= k; unless the query set is every row, the query set's "
    "rows outside the group and the group's rows outside the query set each 0 or >= k); a "
    "group that fails is refused by name. "
)

#: The schema properties ``"by"`` and ``"groups"``.
GROUP_PROPERTIES: dict[str, Any] = {
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
}

GROUP_KINDS = frozenset({"categorical", "boolean"})


@dataclass(frozen=True)
class Group:
    """One group of a request: its label (None: the whole query set) and its 0/1 share of
    the query set's rows (None: every row of it)."""

    label: str | None
    rows: AShare | None
    query: QuerySet


def by_info(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> ColumnInfo | None:
    """The ``by`` column checked against the manifest (None: no ``by``)."""
    if "by" not in parameters:
        return None
    info = named_column(analysis, "by", parameters["by"], GROUP_KINDS, manifest)
    if info.kind == "categorical":
        if len(info.levels) > MAX_GROUPS:
            raise AnalysisError(
                f"{analysis}: parameter 'by': '{info.name}' has {len(info.levels)} "
                f"levels; at most {MAX_GROUPS} groups (use 'groups' to merge levels)"
            )
        for name in one_hot_columns(info):
            if name not in manifest:
                raise AnalysisError(
                    f"{analysis}: parameter 'by': categorical "
                    f"'{info.name}' lacks its one-hot column '{name}'"
                )
    return info


def group_filters(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> list[tuple[str, Filter]]:
    """(label, filter) of each of ``groups``, checked against the manifest."""
    out = []
    for i, group in enumerate(parameters.get("groups", [])):
        try:
            check_filter_shape(group["filter"])
            out.append((group["label"], parse_filter(group["filter"], manifest)))
        except AnalysisError as exc:
            raise AnalysisError(f"{analysis}: parameter 'groups/{i}/{exc}") from None
    return out


def group_count(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> int:
    """How many groups the request has (0: neither ``by`` nor ``groups``)."""
    by = by_info(analysis, parameters, manifest)
    if by is None:
        return len(parameters.get("groups", []))
    return 2 if by.kind == "boolean" else len(by.levels or ())


def groups_size(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> tuple[str, int] | None:
    """The groups as the ``max_levels`` rule counts them (None: no groups)."""
    count = group_count(analysis, parameters, manifest)
    if count == 0:
        return None
    what = f"'by' ('{parameters['by']}')" if "by" in parameters else "'groups'"
    return f"the grouping {what}", count


def validate_groups(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> None:
    """``by`` or ``groups`` (not both), distinct labels, columns and filters that exist."""
    if "by" in parameters and "groups" in parameters:
        raise AnalysisError(f"{analysis}: give either 'by' or 'groups', not both")
    by_info(analysis, parameters, manifest)
    labels = [g["label"] for g in parameters.get("groups", [])]
    if len(set(labels)) != len(labels):
        raise AnalysisError(f"{analysis}: parameter 'groups': labels must be distinct")
    group_filters(analysis, parameters, manifest)


def require_two_groups(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> None:
    """:class:`AnalysisError` unless the request has exactly two groups."""
    count = group_count(analysis, parameters, manifest)
    if count != 2:
        raise AnalysisError(
            f"{analysis}: needs exactly two groups: 'groups' with two "
            "filters, or 'by' a boolean or a categorical column with two "
            f"levels (got {count})"
        )


def group_typed_names(parameters: dict[str, Any]) -> list[str]:
    """The typed columns the groups read, from the parameters alone."""
    named = [parameters["by"]] if "by" in parameters else []
    for group in parameters.get("groups", []):
        named += referenced_columns(group["filter"])
    return list(dict.fromkeys(named))


def by_columns(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> list[str]:
    """The matrix columns ``by`` reads: its values (one-hot levels) and present flag."""
    by = by_info(analysis, parameters, manifest)
    if by is None:
        return []
    present = present_column(manifest, by.name)
    values = one_hot_columns(by) if by.kind == "categorical" else [by.name]
    return values + ([present] if present else [])


def group_columns(
    analysis: str, parameters: dict[str, Any], manifest: Mapping[str, ColumnInfo]
) -> list[str]:
    """The matrix columns the groups read (``by``'s, the filters' of ``groups``)."""
    out = by_columns(analysis, parameters, manifest)
    for _, g in group_filters(analysis, parameters, manifest):
        out += list(g.columns)
    return list(dict.fromkeys(out))


async def group_indicators(
    d: Disclosure, inputs: Inputs, analysis: str, parameters: dict[str, Any]
) -> list[tuple[str, AShare]]:
    """(label, 0/1 share per row) of each group of the request ([] without groups)."""
    by = by_info(analysis, parameters, inputs.manifest)
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
    for label, f in group_filters(analysis, parameters, inputs.manifest):
        out.append((label, await evaluate(d.session, f, inputs.share, inputs.row_count)))
    return out


async def gate_groups(
    d: Disclosure, inputs: Inputs, analysis: str, parameters: dict[str, Any], query: QuerySet
) -> list[Group]:
    """The request's groups, each gated as a query set (see the module doc); one group
    labelled None (the query set itself) without ``by`` or ``groups``."""
    indicators = await group_indicators(d, inputs, analysis, parameters)
    if not indicators:
        return [Group(None, query.rows, query)]
    stacked = concat([x for _, x in indicators])
    if query.rows is not None:
        stacked = await arith.mul(d.session, stacked, concat([query.rows] * len(indicators)))
    rows = inputs.row_count
    within = inputs.segment_sums(query.rows) if query.rows is not None else None
    out = []
    for i, (label, indicator) in enumerate(indicators):
        member = stacked[i * rows : (i + 1) * rows]
        sizes = inputs.segment_sums(member)
        outside = (
            []
            if within is None
            else [
                Complement(f"rows of the query set outside group '{label}'", within - sizes),
                Complement(
                    "rows of the group outside the query set",
                    inputs.segment_sums(indicator) - sizes,
                ),
            ]
        )
        gated = await d.query_set(sizes, inputs.sites, rows, complement=True, complements=outside)
        if gated.refusal is not None:
            gated = dataclasses.replace(gated, refusal=f"group '{label}': {gated.refusal}")
        out.append(Group(label, member, gated))
    return out


async def overlap_refusal(
    d: Disclosure, analysis: str, parameters: dict[str, Any], first: Group, second: Group
) -> str | None:
    """With ``groups`` (filters, which may overlap): the refusal when a row lies in both,
    opening one bit (None: disjoint, or groups of ``by``, disjoint by construction)."""
    if "groups" not in parameters:
        return None
    assert first.rows is not None and second.rows is not None
    overlap = (await arith.dot(d.session, first.rows, second.rows)).reshape(1)
    if await d.all_within("number of rows in both groups", overlap, 0, 0):
        return None
    return f"{analysis}: the two groups overlap (a row passes both filters)"
