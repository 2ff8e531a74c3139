"""Declared column types (``column.type``): checked at compile time, else on every value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dic_connector.errors import FhirPathError, MappingFileError, ViewDefinitionError
from dic_connector.mapping import loads_mapping, run_view
from dic_connector.sqlonfhir.view import iter_rows
from dic_connector.sqlonfhir.view_compile import compile_view
from dic_connector.sqlonfhir.view_tree import InvalidValue
from dic_connector.sqlonfhir.view_types import compatible, declared_type, value_check

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-06-15",
    "name": [{"family": "Smith"}], "multipleBirthInteger": 2,
}


def one_column(path: str, **column: Any) -> dict[str, Any]:
    return {"resource": "Patient", "select": [{"column": [{"name": "c", "path": path,
                                                            **column}]}]}


def rows(view: dict[str, Any], compiled: bool = True) -> list[dict[str, Any]]:
    return list(iter_rows(compile_view(view, allow_compiled=compiled), [PATIENT]))


@pytest.mark.parametrize(("path", "declared", "value"), [
    ("gender", "code", "female"),
    ("gender", "string", "female"),  # a code is a string
    ("getResourceKey()", "id", "p1"),  # System.String carries no finer type
    ("birthDate", "date", "1970-06-15"),
    ("birthDate", "dateTime", "1970-06-15"),  # a date is a valid dateTime
    ("birthDate.lowBoundary()", "dateTime", "1970-06-15"),
    ("multipleBirth.ofType(integer)", "decimal", 2),  # an integer is a valid decimal
    ("name.exists()", "boolean", True),
    ("%rowIndex", "integer", 0),
    ("name.first()", "HumanName", {"family": "Smith"}),
    ("name.first()", "http://hl7.org/fhir/StructureDefinition/HumanName", {"family": "Smith"}),
    ("name.first()", "Element", {"family": "Smith"}),  # an ancestor
])
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_values_of_the_declared_type_pass_unchanged(path: str, declared: str, value: Any,
                                                    compiled: bool) -> None:
    assert rows(one_column(path, type=declared), compiled) == [{"c": value}]


@pytest.mark.parametrize(("path", "declared"), [
    ("gender", "integer"),
    ("birthDate", "boolean"),
    ("multipleBirth.ofType(integer)", "string"),
    ("name.first()", "Address"),
    ("gender", "HumanName"),
    ("name.first()", "string"),
])
def test_a_static_mismatch_rejects_the_view(path: str, declared: str) -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        compile_view(one_column(path, type=declared))
    assert caught.value.path == "$.select[0].column[0].type"


def test_an_unknown_type_is_rejected() -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        compile_view(one_column("gender", type="colour"))
    assert caught.value.path == "$.select[0].column[0].type"
    assert "colour" in str(caught.value)


def test_a_non_primitive_column_must_declare_its_type() -> None:
    with pytest.raises(ViewDefinitionError) as caught:
        compile_view(one_column("name", collection=True))
    assert caught.value.path == "$.select[0].column[0].path"
    assert rows(one_column("name", collection=True, type="HumanName")) == [
        {"c": [{"family": "Smith"}]}]


# iif() is outside the compiled subset and its static type unknown: values are checked
@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_values_of_unknown_static_type_are_checked_one_by_one(compiled: bool) -> None:
    assert rows(one_column("iif(true, gender, id)", type="code"), compiled) == [
        {"c": "female"}]
    assert rows(one_column("iif(true, birthDate, id)", type="date"), compiled) == [
        {"c": "1970-06-15"}]
    for path, declared, where in [
        ("iif(true, gender, id)", "integer", "type"),
        ("iif(true, birthDate, id)", "time", "type"),
        ("iif(true, name, id)", "string", "type"),
        ("iif(true, name, id)", None, "path"),  # non-primitive without a declared type
    ]:
        view = one_column(path, **({} if declared is None else {"type": declared}))
        with pytest.raises(ViewDefinitionError) as caught:
            rows(view, compiled)
        assert caught.value.path == f"$.select[0].column[0].{where}"
        assert "female" not in str(caught.value) and "Smith" not in str(caught.value)


def test_collection_values_are_checked_each() -> None:
    view = one_column("iif(true, name.family | gender, id)", collection=True, type="string")
    assert rows(view) == [{"c": ["Smith", "female"]}]
    bad = one_column("iif(true, name.family | multipleBirth, id)", collection=True,
                     type="string")
    with pytest.raises(ViewDefinitionError):
        rows(bad)


def test_union_branches_must_agree_on_declared_types() -> None:
    view = {"resource": "Patient", "select": [{"unionAll": [
        {"column": [{"name": "v", "path": "gender", "type": "code"}]},
        {"column": [{"name": "v", "path": "birthDate", "type": "date"}]},
    ]}]}
    with pytest.raises(ViewDefinitionError) as caught:
        run_view(view, [PATIENT])
    assert caught.value.path == "$.select[0].unionAll[1]"


def test_compatibility_rules() -> None:
    assert compatible("code", "string") and compatible("System.String", "uri")
    assert compatible("unsignedInt", "integer") and compatible("integer", "decimal")
    assert compatible("date", "dateTime") and compatible("instant", "dateTime")
    assert compatible("Age", "Quantity") and compatible("Patient.contact", "BackboneElement")
    assert compatible("decimal", "integer") is False
    assert compatible("dateTime", "date") is False
    assert compatible("Quantity", "Age") is False
    assert compatible("System.String", "date") is None  # a string may hold a date
    assert compatible(None, "string") is None
    assert compatible("HumanName", None) is False and compatible("string", None) is True
    assert declared_type("http://hl7.org/fhir/StructureDefinition/Observation.referenceRange",
                         "$") == "Observation.referenceRange"


def test_run_time_checks() -> None:
    assert value_check("positiveInt")(3) and not value_check("positiveInt")(0)
    assert value_check("unsignedInt")(0) and not value_check("integer")(True)
    assert value_check("dateTime")("2020-01-02T03:04:05.6+01:00")
    assert not value_check("dateTime")("2020-01-02 03:04")
    assert value_check("time")("10:00:00") and not value_check("date")("10:00")
    assert value_check(None)("x") and not value_check(None)({"a": 1})


def test_a_mapping_file_with_a_mistyped_view_column_names_the_line() -> None:
    text = (Path(__file__).parents[3] / "mappings" / "pilot_adrenal.yaml").read_text(
        encoding="utf-8")
    bad = text.replace("{name: gender, path: gender}",
                       "{name: gender, path: gender, type: integer}")
    with pytest.raises(MappingFileError) as caught:
        loads_mapping(bad, "pilot.yaml")
    assert "$.views[0].view.select[0].column[1].type" in str(caught.value)
    good = text.replace("{name: gender, path: gender}", "{name: gender, path: gender, type: code}")
    assert loads_mapping(good, "pilot.yaml").views[0].name == "patient"


# --- invalid_values: a value the data cannot give spoils one cell, not the run -------------
PROCEDURES: list[dict[str, Any]] = [
    {"resourceType": "Procedure", "id": f"r{i}", "subject": {"reference": f"Patient/p{i}"},
     "extension": [{"url": "dose", "valueQuantity": {"value": dose}},
                   {"url": "n", "valueInteger": n}]}
    for i, (dose, n) in enumerate([(40, 5), ("12,5", 5), ({"value": 3}, 5), (30, "five")])]
DOSE_VIEW: dict[str, Any] = {"resource": "Procedure", "select": [{"column": [
    {"name": "id", "path": "getResourceKey()"},
    {"name": "dose", "path": "extension('dose').value.ofType(Quantity).value"},
    {"name": "per_fraction", "path": "extension('dose').value.ofType(Quantity).value"
                                     " / extension('n').value.ofType(integer)"},
    {"name": "n", "path": "iif(true, extension('n').value, id)", "type": "integer"},
    {"name": "untyped", "path": "iif(true, extension('dose').value.ofType(Quantity).value, id)"},
    {"name": "all", "path": "iif(true, extension('n').value | 1, id)", "collection": True,
     "type": "integer"},
]}]}


def test_without_invalid_values_a_bad_value_fails_the_view() -> None:
    with pytest.raises(FhirPathError, match="not a number"):
        list(iter_rows(compile_view(DOSE_VIEW), PROCEDURES))
    with pytest.raises(FhirPathError, match="fhirpathpy failed"):
        list(iter_rows(compile_view(DOSE_VIEW, allow_compiled=False), PROCEDURES))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_with_invalid_values_a_bad_value_spoils_only_its_cell(compiled: bool) -> None:
    view = compile_view(DOSE_VIEW, allow_compiled=compiled, invalid_values=True)
    got = list(iter_rows(view, PROCEDURES))
    assert [row["id"] for row in got] == ["r0", "r1", "r2", "r3"]  # every resource gives its row
    good = got[0]
    assert good["dose"] == 40 and good["per_fraction"] == 8 and good["n"] == 5
    assert good["all"] == [5, 1]
    text = InvalidValue("not computable", "type: number operand (FHIRPath)" if compiled
                        else "type: valid operand (FHIRPath)")
    # text in arithmetic: the division's cell; the raw value passes (validation judges it)
    assert (got[1]["dose"], got[1]["per_fraction"], got[1]["n"]) == ("12,5", text, 5)
    # an object where a decimal is: the path's static type passes it on (validation judges
    # it), the arithmetic fails on it, and a column of unknown static type refuses it
    assert (got[2]["dose"], got[2]["per_fraction"]) == ({"value": 3}, text)
    assert got[2]["untyped"] == InvalidValue("wrong type", "type: a primitive value")
    assert got[2]["all"] == [5, 1] and good["untyped"] == 40
    # text where an integer is declared: its cell, and the collection holding it
    assert got[3]["n"] == InvalidValue("wrong type", "type: integer")
    assert got[3]["all"] == InvalidValue("wrong type", "type: integer")
    assert got[3]["dose"] == 30
    for row in got:  # no cell carries the value it could not give
        assert not any("12,5" in str(v) or "five" in str(v)
                       for v in row.values() if isinstance(v, InvalidValue))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_with_invalid_values_several_values_spoil_only_their_cell(compiled: bool) -> None:
    """Several values where one is kept: that resource's cell, not the run (without
    ``invalid_values`` it stays the view's error, as the conformance suite expects)."""
    view = {"resource": "Patient", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "given", "path": "name.given"},
        {"name": "birth", "path": "birthDate", "type": "date"}]}]}
    two = {**PATIENT, "id": "two", "name": [{"given": ["Ann", "Bea"]}]}
    one = {**PATIENT, "id": "one", "name": [{"given": ["Cy"]}]}
    with pytest.raises(ViewDefinitionError, match="more than one value"):
        list(iter_rows(compile_view(view, allow_compiled=compiled), [one, two]))
    got = list(iter_rows(compile_view(view, allow_compiled=compiled, invalid_values=True),
                         [one, two]))
    assert [row["id"] for row in got] == ["one", "two"]
    assert got[0]["given"] == "Cy"
    assert got[1]["given"] == InvalidValue("several values", "cardinality: one value")
    assert got[1]["birth"] == got[0]["birth"] == PATIENT.get("birthDate")
    assert "Ann" not in str(got[1]["given"]) and "Bea" not in repr(got[1]["given"])

