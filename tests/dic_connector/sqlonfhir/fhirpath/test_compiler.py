"""The compiled tier: which expressions it takes, its semantics, and its shared helpers."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import Env, MultipleValues, Scope, compile_expression
from dic_connector.sqlonfhir.fhirpath.functions import (
    boundary,
    reference_key,
    temporal_compare,
    temporal_equal,
)
from dic_connector.sqlonfhir.fhirpath.types import Choice, Plain, member

PATIENT: dict[str, Any] = {
    "resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-06",
    "deceasedBoolean": False, "active": True,
    "name": [{"use": "official", "family": "Smith", "given": ["Ann", "Bea"]},
             {"use": "maiden", "family": "Jones"}],
    "extension": [{"url": "u", "valueCode": "A"}, {"url": "u", "valueCode": "B"},
                  {"url": "v", "valueInteger": 3}],
    "link": [{"other": {"reference": "http://x.org/fhir/Patient/p2/_history/3"}}],
    "contact": [{"telecom": [{"system": "phone"}]}],
}
SCOPE = Scope({"s": (["official"], "string"), "i": ([1], "integer"),
               "d": (["1970-06-01"], "date")}, "Patient")


def run(text: str, focus_type: str = "Patient", focus: Any = PATIENT,
        tier: str = "compiled") -> list[Any]:
    expr = compile_expression(text, focus_type, SCOPE)
    assert expr.tier == tier, f"{text} went to {expr.tier}"
    result = expr([focus], Env(PATIENT, 4))
    # the single-item forms the view runner uses give the same
    assert expr.on_item(focus, Env(PATIENT, 4)) == result
    if len(result) > 1:
        with pytest.raises(MultipleValues):
            expr.single(focus, Env(PATIENT, 4))
    else:
        assert expr.single(focus, Env(PATIENT, 4)) == (result[0] if result else None)
    return result


@pytest.mark.parametrize(("text", "expected"), [
    ("name.family", ["Smith", "Jones"]),
    ("Patient.name.given", ["Ann", "Bea"]),
    ("name[%i].family", ["Jones"]),
    ("name[5].family", []),
    ("name.where(use = %s).given.first()", ["Ann"]),
    ("name.given.last()", ["Bea"]),
    ("name.tail().family", ["Jones"]),
    ("name.select(given.count())", [2, 0]),
    ("extension('u').value.ofType(code)", ["A", "B"]),
    ("extension('v').value.ofType(integer) * 2", [6]),
    ("deceased.ofType(boolean)", [False]),
    ("deceased.ofType(dateTime)", []),
    ("name.given.join(', ')", ["Ann, Bea"]),
    ("name.exists(use = 'maiden')", [True]),
    ("telecom.empty()", [True]),
    ("(gender = 'male').not()", [True]),
    ("gender != 'female'", [False]),
    ("birthDate = %d", []),
    ("birthDate < @1971", [True]),
    ("birthDate.lowBoundary()", ["1970-06-01"]),
    ("birthDate.highBoundary()", ["1970-06-30"]),
    ("getResourceKey()", ["p1"]),
    ("link.other.getReferenceKey(Patient)", ["p2"]),
    ("link.other.getReferenceKey(Group)", []),
    ("1 / 4 + 0.1 + 0.2", [Decimal("0.55")]),
    ("7 div 2 = 3 and 7 mod 2 = 1", [True]),
    ("1 / 0", []),
    ("true xor false", [True]),
    ("%rowIndex + 1", [5]),
    ("%resource.id", ["p1"]),
    ("contact.telecom.system", ["phone"]),
    ("$this.id", ["p1"]),
])
def test_compiled_semantics(text: str, expected: list[Any]) -> None:
    assert run(text) == expected


@pytest.mark.parametrize("text", [
    "name.family | name.given",  # union
    "iif(active, 'y', 'n')",  # function outside the subset
    "value",  # no such element on Patient: types unknown
    "deceased = true",  # a choice without ofType has no single type
    "gender = 1",  # mixed kinds
    "name.where(given)",  # where on a non-boolean criterion
    "birthDate.extension",  # members of primitives live under _birthDate
    "name is HumanName",
    "4 'mg'",
    "$index",
])
def test_outside_the_subset_goes_to_fhirpathpy(text: str) -> None:
    assert compile_expression(text, "Patient", SCOPE).tier == "fhirpathpy"


def test_fhirpathpy_tier_knows_choice_types_below_the_root() -> None:
    answer = {"valueString": "yes"}
    expr = compile_expression("value.ofType(string)", "QuestionnaireResponse.item.answer",
                              SCOPE, allow_compiled=False)
    assert expr([answer], Env({})) == ["yes"]


def test_fhirpathpy_tier_returns_every_matching_extension() -> None:
    expr = compile_expression("extension('u').value.ofType(code)", "Patient", SCOPE,
                              allow_compiled=False)
    assert expr([PATIENT], Env(PATIENT)) == ["A", "B"]


def test_singleton_operators_reject_collections() -> None:
    with pytest.raises(FhirPathError, match="single item"):
        run("name.family < 'Z'")
    with pytest.raises(FhirPathError, match="single item"):
        run("name.family + 'x'")
    assert run("name.family = 'Smith'") == [False]


def test_undefined_constant_is_a_compile_error() -> None:
    with pytest.raises(FhirPathError, match="undefined constant %nope"):
        compile_expression("name.where(use = %nope)", "Patient", SCOPE)


@pytest.mark.parametrize("text", ["name..family", "a b", "name.given["])
def test_syntax_errors_fhirpathpy_would_swallow_are_errors(text: str) -> None:
    with pytest.raises(FhirPathError, match="offset"):
        compile_expression(text, "Patient", SCOPE)


def test_model_lookup() -> None:
    assert member("Patient", "name") == Plain("name", "HumanName")
    assert member("Patient", "contact") == Plain("contact", "Patient.contact")
    assert member("QuestionnaireResponse.item.answer", "item") == Plain(
        "item", "QuestionnaireResponse.item")
    choice = member("Patient", "deceased")
    assert isinstance(choice, Choice)
    assert choice.options == (("deceasedBoolean", "boolean"), ("deceasedDateTime", "dateTime"))
    assert member("string", "extension") is None
    assert member(None, "x") is None


@pytest.mark.parametrize(("left", "right", "order"), [
    ("2020", "2020-01", None), ("2019", "2020-01", -1), ("2020-01-01T10:00:00Z",
     "2020-01-01T12:00:00+02:00", 0), ("2020-01-01T10:00:00.5Z", "2020-01-01T10:00:00Z", 1),
    ("2020-01-01T10:00", "2020-01-01T10:00:00", None),
])
def test_temporal_compare(left: str, right: str, order: int | None) -> None:
    assert temporal_compare(left, right, is_time=False) == order


def test_temporal_equal_date_against_datetime_with_time_is_false() -> None:
    assert temporal_equal("2020-01-01T10:00:00Z", "2020-01-01", is_time=False) is False
    assert temporal_equal("2020", "2020-01-01", is_time=False) is None
    assert temporal_compare("10:00", "10:00:00", is_time=True) is None


@pytest.mark.parametrize(("value", "kind", "low", "high"), [
    (1.0, "number", Decimal("0.95"), Decimal("1.05")),
    (12, "number", Decimal("11.5"), Decimal("12.5")),
    (-2.25, "number", Decimal("-2.255"), Decimal("-2.245")),
    # the written digits count (parse_float=Decimal); a float keeps only its shortest repr
    (Decimal("1.50"), "number", Decimal("1.495"), Decimal("1.505")),
    (1.50, "number", Decimal("1.45"), Decimal("1.55")),
    (Decimal("2.0"), "number", Decimal("1.95"), Decimal("2.05")),
    ("2010-10-10", "dateTime", "2010-10-10T00:00:00.000+14:00", "2010-10-10T23:59:59.999-12:00"),
    ("2010-10-10T10:30Z", "dateTime", "2010-10-10T10:30:00.000Z", "2010-10-10T10:30:59.999Z"),
    ("2012-02", "date", "2012-02-01", "2012-02-29"), ("2012", "date", "2012-01-01", "2012-12-31"),
    ("12:34", "time", "12:34:00.000", "12:34:59.999"),
])
def test_boundaries(value: Any, kind: str, low: Any, high: Any) -> None:
    assert boundary(value, kind, high=False) == low
    assert boundary(value, kind, high=True) == high


@pytest.mark.parametrize(("reference", "wanted", "key"), [
    ({"reference": "Patient/a"}, None, "a"), ({"reference": "Patient/a"}, "Patient", "a"),
    ({"reference": "Patient/a"}, "Group", None),
    ({"reference": "https://h/fhir/Patient/a/_history/2"}, "Patient", "a"),
    ({"reference": "urn:uuid:123", "type": "Patient"}, "Patient", "123"),
    ({"reference": "urn:uuid:123"}, "Patient", None), ({"display": "x"}, None, None),
])
def test_reference_key(reference: dict[str, Any], wanted: str | None, key: str | None) -> None:
    assert reference_key(reference, wanted) == key
