"""The generated view functions against a plain interpreter of the select tree.

:mod:`dic_connector.sqlonfhir.view_codegen` unrolls a select tree into nested loops (streamed or
collected parts, union branches written out one by one, one Env per loop). The oracle here is
the processing model of the specification read literally: every select node's rows as a list,
the cross product of the parts, the union as a concatenation, a fresh Env per item, and only
the collection form of each expression. Hypothesis generates select trees; both FHIRPath tiers
must give the oracle's rows, in the oracle's order.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dic_connector.errors import ViewDefinitionError
from dic_connector.sqlonfhir.fhirpath import Env
from dic_connector.sqlonfhir.fhirpath.env import Collection
from dic_connector.sqlonfhir.view import iter_rows
from dic_connector.sqlonfhir.view_compile import CompiledView, compile_view
from dic_connector.sqlonfhir.view_tree import Select

Row = dict[str, Any]

PATIENTS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "gender": "female", "active": True,
     "name": [{"use": "official", "family": "Smith", "given": ["Ann", "Bea"]},
              {"family": "Jones"}, {"use": "maiden", "given": ["Cy"]}],
     "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
     "contact": [{"name": {"family": "C"}, "telecom": [{"value": "2"}, {"value": "3"}]},
                 {"name": {"family": "D"}}]},
    {"resourceType": "Patient", "id": "p2", "name": [{"family": "Lee"}]},
    {"resourceType": "Patient", "id": "p3"},
]


# --- the oracle: the processing model, read literally --------------------------------------

def _one(values: Collection, path: str) -> Any:
    if len(values) > 1:
        raise ViewDefinitionError("more than one value", path)
    return values[0] if values else None


def _select_rows(node: Select, focus: Collection, env: Env) -> list[Row]:
    if node.mode == "plain":
        return _body(node, focus, env)
    if node.mode == "repeat":
        items: Collection = []

        def walk(found: Collection) -> None:
            for item in found:
                items.append(item)
                for expr in node.recurse:
                    walk(expr.evaluate([item], env))

        for expr in node.iterate:
            walk(expr.evaluate(focus, env))
    else:
        items = node.iterate[0].evaluate(focus, env)
    if not items and node.mode == "forEachOrNull":
        return _body(node, [], env.at(0))
    return [row for index, item in enumerate(items)
            for row in _body(node, [item], env.at(index))]


def _body(node: Select, focus: Collection, env: Env) -> list[Row]:
    own: Row = {}
    for column in node.columns:
        values = column.expr.evaluate(focus, env)
        own[column.name] = values if column.collection else _one(values, column.path)
    parts = [[own]] + [_select_rows(child, focus, env) for child in node.selects]
    if node.union:
        parts.append([row for branch in node.union
                      for row in _select_rows(branch, focus, env)])
    rows: list[Row] = [{}]
    for part in parts:
        rows = [{**row, **extra} for row in rows for extra in part]
    return rows


def oracle(view: CompiledView, resources: list[dict[str, Any]]) -> list[Row]:
    out: list[Row] = []
    for resource in resources:
        if resource.get("resourceType") != view.resource:
            continue
        env = Env(resource)
        if all(expr.evaluate([resource], env) == [True] for expr, _ in view.where):
            out.extend({name: row[name] for name in view.columns}
                       for row in _select_rows(view.root, [resource], env))
    return out


def _outcome(view: dict[str, Any], compiled: bool) -> Any:
    try:
        plan = compile_view(view, allow_compiled=compiled)
    except ViewDefinitionError as exc:
        return ("invalid", exc.path)
    try:
        return list(iter_rows(plan, PATIENTS))
    except ViewDefinitionError as exc:
        return ("error", exc.path)


def _expected(view: dict[str, Any]) -> Any:
    try:
        plan = compile_view(view)
    except ViewDefinitionError as exc:
        return ("invalid", exc.path)
    try:
        return oracle(plan, PATIENTS)
    except ViewDefinitionError as exc:
        return ("error", exc.path)


# --- generated select trees -----------------------------------------------------------------

_PATHS = {
    "Patient": ["id", "gender", "active", "name.family.first()", "telecom.value",
                "%rowIndex", "'k'", "getResourceKey()", "name.count()"],
    "HumanName": ["family", "use", "given.first()", "given", "given.join('+')", "%rowIndex",
                  "'n'"],
    "string": ["$this", "%rowIndex"],
    "ContactPoint": ["system", "value", "%rowIndex"],
    "Patient.contact": ["name.family", "telecom.value", "%rowIndex"],
}
_ITERATE = {
    "Patient": [("name", "HumanName"), ("telecom", "ContactPoint"),
                ("contact", "Patient.contact"), ("name.given", "string")],
    "HumanName": [("given", "string")],
    "Patient.contact": [("telecom", "ContactPoint")],
    "string": [],
    "ContactPoint": [],
}


class _Names:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"c{self.count}"


@st.composite
def _select(draw: st.DrawFn, focus: str, names: _Names, depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    iterate = _ITERATE[focus]
    if iterate and draw(st.booleans()):
        path, focus = draw(st.sampled_from(iterate))
        node[draw(st.sampled_from(["forEach", "forEachOrNull"]))] = path
    columns = [{"name": names(), "path": draw(st.sampled_from(_PATHS[focus])),
                "collection": draw(st.booleans())}
               for _ in range(draw(st.integers(0 if depth else 1, 2)))]
    if columns:
        node["column"] = columns
    if depth and draw(st.booleans()):
        node["select"] = [draw(_select(focus, names, depth - 1))
                          for _ in range(draw(st.integers(1, 2)))]
    if depth and draw(st.booleans()):
        first = draw(_select(focus, names, 0))
        names_in_first = [c["name"] for c in first.get("column", [])]
        branches = [first]
        for _ in range(draw(st.integers(0, 2))):
            branch = draw(_select(focus, _Names(), 0))
            branch["column"] = [{"name": name, "path": draw(st.sampled_from(
                _PATHS[branch_focus(branch, focus)]))} for name in names_in_first]
            branches.append(branch)
        node["unionAll"] = branches
    if not node.get("column") and not node.get("select") and not node.get("unionAll"):
        node["column"] = [{"name": names(), "path": "%rowIndex"}]
    return node


def branch_focus(branch: dict[str, Any], focus: str) -> str:
    for key in ("forEach", "forEachOrNull"):
        if key in branch:
            return dict(_ITERATE[focus])[branch[key]]
    return focus


@st.composite
def views(draw: st.DrawFn) -> dict[str, Any]:
    names = _Names()
    selects = [draw(_select("Patient", names, 2)) for _ in range(draw(st.integers(1, 3)))]
    view: dict[str, Any] = {"resource": "Patient", "select": selects}
    if draw(st.booleans()):
        view["where"] = [{"path": draw(st.sampled_from(
            ["name.exists()", "gender = 'female'", "active", "telecom.empty().not()"]))}]
    return view


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(view=views())
def test_generated_views_match_the_processing_model(view: dict[str, Any]) -> None:
    expected = _expected(view)
    if isinstance(expected, list):
        source = compile_view(view).source
        event("parts collected" if ".append(" in source else "parts streamed")
        event(f"rows: {min(len(expected), 10)}")
    else:
        event(f"outcome: {expected[0]}")
    assert _outcome(view, compiled=True) == expected
    assert _outcome(view, compiled=False) == expected


# --- the cases the unrolling must get right -------------------------------------------------

def test_sibling_parts_keep_their_own_row_index_and_are_evaluated_once() -> None:
    view = {"resource": "Patient", "select": [
        {"forEach": "name", "column": [{"name": "a", "path": "%rowIndex"}]},
        {"column": [{"name": "b", "path": "%rowIndex"}]},
        {"forEach": "telecom", "column": [{"name": "c", "path": "%rowIndex"},
                                          {"name": "s", "path": "system"}]},
    ]}
    rows = list(iter_rows(compile_view(view), PATIENTS[:1]))
    assert rows == [{"a": a, "b": 0, "c": c, "s": s} for a in range(3)
                    for c, s in enumerate(["phone", "email"])]
    assert rows == oracle(compile_view(view), PATIENTS[:1])


def test_for_each_or_null_runs_its_select_once_on_the_empty_collection() -> None:
    view = {"resource": "Patient", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"forEachOrNull": "contact", "column": [
            {"name": "i", "path": "%rowIndex"}, {"name": "k", "path": "'const'"},
            {"name": "t", "path": "telecom.value", "collection": True}]},
    ]}
    rows = list(iter_rows(compile_view(view), PATIENTS))
    assert rows == [
        {"id": "p1", "i": 0, "k": "const", "t": ["2", "3"]},
        {"id": "p1", "i": 1, "k": "const", "t": []},
        {"id": "p2", "i": 0, "k": "const", "t": []},
        {"id": "p3", "i": 0, "k": "const", "t": []},
    ]
    assert rows[2]["t"] is not rows[3]["t"]


def test_the_generated_source_is_kept_and_names_no_data() -> None:
    compiled = compile_view({"resource": "Patient", "select": [
        {"column": [{"name": "id", "path": "getResourceKey()"}]},
        {"forEach": "name", "column": [{"name": "family", "path": "family"}]}]})
    assert compiled.source.startswith("def run(resources):")
    assert "for x" in compiled.source and "yield {'id': c0, 'family': c1}" in compiled.source


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_many_values_error_names_the_column(compiled: bool) -> None:
    view = {"resource": "Patient", "select": [
        {"forEach": "contact", "column": [{"name": "t", "path": "telecom.value"}]}]}
    with pytest.raises(ViewDefinitionError) as caught:
        list(iter_rows(compile_view(view, allow_compiled=compiled), PATIENTS))
    assert caught.value.path == "$.select[0].column[0].path"
    assert "2" not in str(caught.value)
