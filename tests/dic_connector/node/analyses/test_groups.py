"""The groups of a request (``by``, ``groups``) checked against the manifest, the columns they
read, and each group gated as a query set on three loopback parties against a plaintext
statement of the rules (every complement, by label)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Rules
from dic_connector.node.analyses.groups import (
    by_columns,
    gate_groups,
    group_columns,
    group_count,
    group_typed_names,
    overlap_refusal,
    validate_groups,
)
from dic_connector.node.analyses.manifest import parse_manifest
from mpc.session import Session, run_local
from tests.dic_connector.node.analyses.support import Table, spying

TABLE = (
    Table()
    .numeric("x", [1, 2, None, 4, 5, 6, 7, 8])
    .boolean("b", [True, False, True, None, True, False, True, False])
    .categorical("c", ["u", "v", "w"], ["u", "v", "w", "u", "v", "w", "u", "v"])
)
MANIFEST = parse_manifest(TABLE.entries)
LOW = {"label": "low", "filter": {"op": "<", "column": "x", "value": 5}}
HIGH = {"label": "high", "filter": {"op": ">=", "column": "x", "value": 4}}


@pytest.mark.parametrize(
    "parameters, message",
    [
        ({"by": "b", "groups": [LOW]}, "either 'by' or 'groups', not both"),
        ({"by": "x"}, "parameter 'by': 'x' is numeric; expected a boolean or categorical"),
        ({"by": "nope"}, "parameter 'by': unknown column 'nope'"),
        ({"groups": [LOW, {**HIGH, "label": "low"}]}, "labels must be distinct"),
        (
            {"groups": [LOW, {"label": "bad", "filter": {"op": "<", "column": "zz", "value": 1}}]},
            "parameter 'groups/1/",
        ),
    ],
)
def test_validation_names_the_parameter(parameters: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        validate_groups("t_test", parameters, MANIFEST)


def test_counts_and_columns() -> None:
    assert group_count("a", {"by": "b"}, MANIFEST) == 2
    assert group_count("a", {"by": "c"}, MANIFEST) == 3
    assert group_count("a", {"groups": [LOW, HIGH]}, MANIFEST) == 2
    assert group_count("a", {}, MANIFEST) == 0
    assert by_columns("a", {"by": "b"}, MANIFEST) == ["b", "b__present"]
    assert by_columns("a", {"by": "c"}, MANIFEST) == ["c=u", "c=v", "c=w"]
    assert group_columns("a", {"groups": [LOW, HIGH]}, MANIFEST) == ["x", "x__present"]
    assert group_typed_names({"groups": [LOW, HIGH]}) == ["x"]
    assert group_typed_names({"by": "c"}) == ["c"]


def gated(
    parameters: dict[str, Any], rules: Rules, column: str = "x"
) -> list[tuple[str | None, str | None, str | None]]:
    """(label, refusal, overlap refusal) per group, gated under the query set where
    ``column`` is present (every row, for a column without missing values)."""
    inputs = TABLE.inputs()

    async def program(s: Session, mine: Inputs) -> list[tuple[str | None, str | None, str | None]]:
        with Disclosure(s, rules) as d:
            present = f"{column}__present"
            rows = mine.columns.get(present)
            query = QuerySet(None, None, rows)
            groups = await gate_groups(d, mine, "a", parameters, query)
            overlap = (
                await overlap_refusal(d, "a", parameters, groups[0], groups[1])
                if len(groups) == 2
                else None
            )
            return [(g.label, g.query.refusal, overlap) for g in groups]

    with spying():
        out: list[list[tuple[str | None, str | None, str | None]]] = asyncio.run(
            run_local(program, inputs)
        )
    assert out[0] == out[1] == out[2]
    return out[0]


def test_each_group_is_a_query_set_with_its_complements() -> None:
    """x is missing in row 2 (b true, c w); b is missing in row 3. Under the query set
    'x present' (7 rows): b=true has 3 rows, b=false 3; c=u 3, c=v 3, c=w 1."""
    assert gated({"by": "b"}, Rules(1, 1)) == [("true", None, None), ("false", None, None)]
    refused = dict((label, reason) for label, reason, _ in gated({"by": "b"}, Rules(2, 1)))
    # b=true: 1 row outside the query set (row 2); the query set's rows outside b=false: 4
    assert refused["true"] == (
        "group 'true': between 1 and 1 rows of the group outside the "
        "query set; releasing the query set would disclose their "
        "number (complement rule)"
    )
    assert refused["false"] is None
    by_c = dict((label, reason) for label, reason, _ in gated({"by": "c"}, Rules(2, 1)))
    assert by_c["w"] is not None and by_c["w"].startswith("group 'w': ")
    assert "(min_cell_count)" in by_c["w"] and " 1 " not in by_c["w"]


def test_overlap_of_two_filters_opens_one_bit() -> None:
    assert [o for _, _, o in gated({"groups": [LOW, HIGH]}, Rules(1, 1))] == [
        "a: the two groups overlap (a row passes both filters)"
    ] * 2
    apart = {**HIGH, "filter": {"op": ">=", "column": "x", "value": 5}}
    assert [o for _, _, o in gated({"groups": [LOW, apart]}, Rules(1, 1))] == [None, None]
    assert [o for _, _, o in gated({"by": "b"}, Rules(1, 1))] == [None, None]
