"""ViewDefinition validation (JSON path of every error) and run_view semantics."""

from __future__ import annotations

from typing import Any

import pytest

from dic_connector.errors import ViewDefinitionError
from dic_connector.mapping import run_view
from dic_connector.sqlonfhir.view import iter_rows
from dic_connector.sqlonfhir.view_compile import compile_view

PATIENTS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "p1", "gender": "female",
     "name": [{"family": "Smith", "given": ["Ann", "Bea"]}, {"family": "Jones"}]},
    {"resourceType": "Patient", "id": "p2"},
    {"resourceType": "Observation", "id": "o1", "status": "final"},
]
ID = {"name": "id", "path": "id"}


def view(*selects: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"resource": "Patient", "select": list(selects), **extra}


@pytest.mark.parametrize(("bad", "path"), [
    ([], "$"),
    ({"select": [{"column": [ID]}]}, "$.resource"),
    ({"resource": "Patiant", "select": [{"column": [ID]}]}, "$.resource"),
    ({"resource": "Patient", "select": []}, "$.select"),
    (view({"column": [ID]}, constant={"name": "x"}), "$.constant"),
    (view({"column": [ID]}, constant=[{"valueString": "x"}]), "$.constant[0].name"),
    (view({"column": [ID]}, constant=[{"name": "x", "valueString": "a", "valueCode": "b"}]),
     "$.constant[0]"),
    (view({"column": [ID]}, constant=[{"name": "x", "valueString": "a"},
                                      {"name": "x", "valueString": "b"}]), "$.constant[1].name"),
    (view({"column": [ID], "colum": []}), "$.select[0]"),
    (view({"column": [ID]}, {"forEach": "name", "repeat": ["name"]}), "$.select[1]"),
    (view({"forEach": 1}), "$.select[0].forEach"),
    (view({"column": [ID]}, {"repeat": "item"}), "$.select[1].repeat"),
    (view({"column": ID}), "$.select[0].column"),
    (view({"column": [ID, {"name": "1x", "path": "id"}]}), "$.select[0].column[1].name"),
    (view({"column": [{"name": "a", "path": "id", "collection": "yes"}]}),
     "$.select[0].column[0].collection"),
    (view({"column": [{"name": "a"}]}), "$.select[0].column[0].path"),
    (view({"column": [{"name": "a", "path": "name.family["}]}), "$.select[0].column[0].path"),
    (view({"column": [{"name": "a", "path": "%nope"}]}), "$.select[0].column[0].path"),
    (view({"select": [{"column": [ID]}, {"unionAll": [
        {"column": [{"name": "a", "path": "id"}]}, {"column": [{"name": "b", "path": "id"}]},
    ]}]}), "$.select[0].select[1].unionAll[1]"),
    (view({"column": [ID]}, {"column": [ID]}), "$.select"),
    (view({"column": [ID]}, where=[{"path": "gender"}]), "$.where[0].path"),
    (view({"column": [ID]}, where=["active"]), "$.where[0]"),
])
def test_invalid_views_name_the_element(bad: Any, path: str) -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        run_view(bad, PATIENTS)
    assert caught.value.path == path
    assert str(caught.value).startswith(f"{path}: ")


def test_run_time_errors_name_the_place_but_no_value() -> None:
    bad_column = view({"column": [{"name": "family", "path": "name.family"}]})
    with pytest.raises(ViewDefinitionError) as caught:
        run_view(bad_column, PATIENTS)
    assert caught.value.path == "$.select[0].column[0].path"
    assert "Smith" not in str(caught.value) and "Jones" not in str(caught.value)
    untyped_where = view({"column": [ID]}, where=[{"path": "iif(true, gender, 'x')"}])
    with pytest.raises(ViewDefinitionError) as caught:
        run_view(untyped_where, PATIENTS)
    assert caught.value.path == "$.where[0].path"
    assert "female" not in str(caught.value)


NESTED = view(
    {"column": [ID]},
    {"forEachOrNull": "name", "column": [
        {"name": "i", "path": "%rowIndex"}, {"name": "family", "path": "family"},
        {"name": "given", "path": "given", "collection": True},
    ], "unionAll": [
        {"forEach": "given", "column": [{"name": "part", "path": "$this"}]},
        {"column": [{"name": "part", "path": "'-'"}]},
    ]},
)
NESTED_ROWS = [
    {"id": "p1", "i": 0, "family": "Smith", "given": ["Ann", "Bea"], "part": "Ann"},
    {"id": "p1", "i": 0, "family": "Smith", "given": ["Ann", "Bea"], "part": "Bea"},
    {"id": "p1", "i": 0, "family": "Smith", "given": ["Ann", "Bea"], "part": "-"},
    {"id": "p1", "i": 1, "family": "Jones", "given": [], "part": "-"},
    {"id": "p2", "i": 0, "family": None, "given": [], "part": "-"},
]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_nested_forEachOrNull_unionAll_and_collections(compiled: bool) -> None:
    rows = list(iter_rows(compile_view(NESTED, allow_compiled=compiled), PATIENTS))
    assert rows == NESTED_ROWS
    assert all(list(row) == ["id", "i", "family", "given", "part"] for row in rows)


def test_repeat_is_depth_first_with_row_index() -> None:
    qr = {"resourceType": "QuestionnaireResponse", "id": "q", "item": [
        {"linkId": "1", "item": [{"linkId": "1.1", "answer": [
            {"valueString": "x", "item": [{"linkId": "1.1.1"}]}]}]},
        {"linkId": "2"}]}
    rows = run_view({"resource": "QuestionnaireResponse", "select": [
        {"repeat": ["item", "answer.item"], "column": [
            {"name": "i", "path": "%rowIndex"}, {"name": "link", "path": "linkId"}]}]}, [qr])
    assert rows == [{"i": 0, "link": "1"}, {"i": 1, "link": "1.1"}, {"i": 2, "link": "1.1.1"},
                    {"i": 3, "link": "2"}]


def test_where_filters_and_other_resource_types_are_skipped() -> None:
    rows = run_view(view({"column": [ID]}, where=[{"path": "gender = 'female'"}]),
                    iter(PATIENTS))
    assert rows == [{"id": "p1"}]
    assert run_view({"resource": "Observation", "select": [{"column": [ID]}]},
                    PATIENTS) == [{"id": "o1"}]


def test_compiled_view_reports_its_columns_and_tiers() -> None:
    compiled = compile_view(NESTED)
    assert compiled.columns == ("id", "i", "family", "given", "part")
    assert compiled.root.selects[1].iterate[0].tier == "compiled"
