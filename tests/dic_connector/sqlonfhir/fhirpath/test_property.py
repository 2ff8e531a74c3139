"""Both FHIRPath tiers agree: every expression the compiler accepts gives fhirpathpy's result.

Two sources of cases: (1) every expression in the SQL-on-FHIR suite, on every fixture resource
of the view's type; (2) hypothesis-generated, well-typed expressions over Patient and
Observation on hypothesis-generated resources. A case is skipped only when the compiler
declines it (then fhirpathpy evaluates it anyway, by design). When one tier raises (e.g. a
comparison on a collection of several items), the other must raise too.
"""

from __future__ import annotations

import functools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import (
    CompiledExpression,
    Env,
    MultipleValues,
    Scope,
    compile_expression,
)
from dic_connector.sqlonfhir.view_compile import compile_view
from dic_connector.sqlonfhir.view_tree import Select

SUITE_DIR = Path(__file__).parents[4].parent / "shared" / "conformance" / "sql-on-fhir"
CONSTANTS: dict[str, tuple[list[Any], str | None]] = {
    "s": (["official"], "string"), "n": ([2], "integer"), "d": (["1970-06-15"], "date"),
    "b": ([True], "boolean"), "dec": ([1.5], "decimal"),
}


def canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return round(float(value), 9)
    if isinstance(value, list):
        return [canonical(v) for v in value]
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    return str(value)


def outcome(expr: CompiledExpression, focus: list[Any], env: Env) -> Any:
    try:
        return canonical(expr(focus, env))
    except FhirPathError:
        return "error"


def item_outcomes(expr: CompiledExpression, item: Any, env: Env) -> tuple[Any, Any]:
    """The single-item forms (what the view runner calls) on one item."""
    try:
        on_item = canonical(expr.on_item(item, env))
    except FhirPathError:
        on_item = "error"
    try:
        single = canonical(expr.single(item, env))
    except FhirPathError:
        single = "error"
    except MultipleValues:
        single = "several"
    return on_item, single


def assert_tiers_agree(text: str, focus_type: str | None, scope: Scope, focus: list[Any],
                       env: Env) -> bool:
    fast = compile_expression(text, focus_type, scope)
    if fast.tier != "compiled":
        return False
    slow = compile_expression(text, focus_type, scope, allow_compiled=False)
    assert slow.tier == "fhirpathpy"
    result = outcome(fast, focus, env)
    assert result == outcome(slow, focus, env), text
    if len(focus) == 1:
        forms = item_outcomes(fast, focus[0], env)
        assert forms == item_outcomes(slow, focus[0], env), text
        if result != "error":
            assert forms[0] == result, text
            assert forms[1] == ("several" if len(result) > 1 else
                                result[0] if result else None), text
        if fast.test is not None:  # the direct test of a where criterion
            assert result != "error", text
            assert fast.test(focus[0], env) is (result == [True]), text
    return True


# --- (1) the suite's own expressions on the suite's fixtures --------------------------------

def _check_node(node: Select, focus: list[Any], focus_type: str | None, scope: Scope,
                env: Env) -> int:
    """Check every expression of ``node`` on ``focus``, and below it on each forEach item."""
    checked = 0
    for expr in node.iterate:
        checked += assert_tiers_agree(expr.text, focus_type, scope, focus, env)
    if node.mode in ("forEach", "forEachOrNull"):
        item_type = node.iterate[0].type
        items = [[item] for item in node.iterate[0](focus, env)]
    elif node.mode == "repeat":
        return checked
    else:
        item_type, items = focus_type, [focus]
    for item in items:
        for column in node.columns:
            checked += assert_tiers_agree(column.expr.text, item_type, scope, item, env)
        for child in node.selects + node.union:
            checked += _check_node(child, item, item_type, scope, env)
    return checked


def _suite_cases() -> list[Any]:
    if not SUITE_DIR.is_dir():
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"{SUITE_DIR} absent"))]
    cases = []
    for path in sorted(SUITE_DIR.glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for case in suite["tests"]:
            if not case.get("expectError"):
                cases.append(pytest.param((suite["resources"], case["view"]),
                                          id=f"{path.name}::{case['title']}"))
    return cases


@pytest.mark.parametrize("case", _suite_cases())
def test_suite_expressions_agree_on_suite_fixtures(case: Any) -> None:
    resources, view = case
    compiled = compile_view(view)
    for resource in resources:
        if resource.get("resourceType") != compiled.resource:
            continue
        env = Env(resource, 1)
        for where, _ in compiled.where:
            assert_tiers_agree(where.text, compiled.resource, compiled.scope, [resource], env)
        _check_node(compiled.root, [resource], compiled.resource, compiled.scope, env)


# --- (2) generated expressions on generated resources ---------------------------------------

_DATES = st.sampled_from(["1970", "1970-06", "1970-06-15", "1970-06-16", "2001-12-31",
                          "1970-06-15T10:00:00Z", "1970-06-15T10:00:00.123+02:00"])
_WORDS = st.sampled_from(["official", "usual", "a", "b", "Smith", "x,y"])
# FHIR decimals as floats (plain json.loads) and as Decimals with their written digits
# (parse_float=Decimal), which lowBoundary()/highBoundary() and comparisons must respect
_NUMBERS = st.one_of(st.integers(-5, 20), st.sampled_from([0.5, 1.0, 1.25, 2.0, -3.5, 10.1]),
                     st.sampled_from([Decimal("1.50"), Decimal("2.0"), Decimal("0.1"),
                                      Decimal("-3.50"), Decimal("10.10"), Decimal("1.5")]))


@st.composite
def patients(draw: st.DrawFn) -> dict[str, Any]:
    patient: dict[str, Any] = {"resourceType": "Patient", "id": draw(st.sampled_from(["p1", "p2"]))}
    optional = {
        "active": st.booleans(), "gender": st.sampled_from(["male", "female", "other"]),
        "birthDate": _DATES.filter(lambda d: "T" not in d), "deceasedBoolean": st.booleans(),
        "name": st.lists(st.fixed_dictionaries({"family": _WORDS}, optional={
            "use": st.sampled_from(["official", "usual"]),
            "given": st.lists(_WORDS, min_size=1, max_size=3)}), max_size=3),
        "extension": st.lists(st.one_of(
            st.fixed_dictionaries({"url": st.sampled_from(["u1", "u2"]), "valueCode": _WORDS}),
            st.fixed_dictionaries({"url": st.just("u3"), "valueInteger": st.integers(0, 9)}),
            st.fixed_dictionaries({"url": st.just("u4"), "extension": st.lists(
                st.fixed_dictionaries({"url": st.sampled_from(["u1", "u2"]),
                                       "valueCode": _WORDS}), max_size=2)}),
        ), max_size=3),
        "link": st.lists(st.fixed_dictionaries({"other": st.fixed_dictionaries({
            "reference": st.sampled_from(["Patient/p1", "Patient/p2", "Group/p1"])})}),
            max_size=2),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            patient[key] = draw(strategy)
    return patient


@st.composite
def observations(draw: st.DrawFn) -> dict[str, Any]:
    obs: dict[str, Any] = {"resourceType": "Observation", "id": "o1", "status": "final"}
    value = draw(st.sampled_from(["Quantity", "String", "Integer", "DateTime", "Time", "None"]))
    if value == "Quantity":
        obs["valueQuantity"] = {"value": draw(_NUMBERS), "unit": "mg"}
    elif value == "String":
        obs["valueString"] = draw(_WORDS)
    elif value == "Integer":
        obs["valueInteger"] = draw(st.integers(-5, 20))
    elif value == "DateTime":
        obs["valueDateTime"] = draw(_DATES)
    elif value == "Time":
        obs["valueTime"] = draw(st.sampled_from(["10:00", "10:00:00", "23:59:59.5"]))
    if draw(st.booleans()):
        obs["effectiveDateTime"] = draw(_DATES)
    if draw(st.booleans()):
        obs["code"] = {"coding": draw(st.lists(st.fixed_dictionaries(
            {"system": st.sampled_from(["http://loinc.org", "x"]), "code": _WORDS}),
            max_size=3))}
    return obs


_LEAVES = {
    "Patient": {
        "string": ["id", "gender", "name.family", "name.given", "name.use", "%s", "'official'",
                   "name.where(use = %s).family", "extension('u1').value.ofType(code)",
                   "getResourceKey()", "link.other.getReferenceKey(Patient)",
                   "name.where(given.exists()).family", "name.select(given.first())",
                   "name.where($this.use = 'official').given.last()", "name[1].family",
                   "Patient.name.family.tail()", "name.where(given.count() > 1).family",
                   "extension('u1').value.ofType(code).first()", "extension.url.first()",
                   "name.first().given.first()", "extension('u4').extension('u1').value.ofType(code)",
                   "extension.value.ofType(code)", "extension.where(url = 'u2').value.ofType(code)",
                   "link.other.getReferenceKey()", "name[0].given", "name.given.join(',')"],
        "number": ["%n", "1", "2.5", "name.count()", "%rowIndex", "%dec",
                   "extension('u3').value.ofType(integer)"],
        "boolean": ["active", "deceased.ofType(boolean)", "%b", "true", "name.exists()",
                    "name.empty()", "extension.exists()",
                    # where-criterion shapes with a direct test (see fhirpath/item.py)
                    "gender = 'male'", "name.use != %s", "active = true",
                    "name.where(use = 'official' and family = 'Smith').exists()",
                    "name.exists(use = %s or given.exists())", "link.other.empty()",
                    "extension('u3').value.ofType(integer) = 3",
                    "extension.where(url = 'u1').empty()"],
        "date": ["birthDate", "%d", "birthDate.lowBoundary()", "birthDate.highBoundary()"],
        "collection": ["name", "extension", "link", "name.given", "telecom"],
    },
    "Observation": {
        "string": ["value.ofType(string)", "code.coding.code", "code.coding.system", "status",
                   "code.coding.where(code = 'a').system", "code.coding.select(code & '/')"],
        "number": ["value.ofType(Quantity).value", "value.ofType(integer)", "%n", "%dec",
                   "value.ofType(Quantity).value.lowBoundary()"],
        "boolean": ["value.exists()", "code.coding.where(system = 'x').exists()", "%b",
                    "code.coding.where(system = 'http://loinc.org' and code = 'a').exists()",
                    "value.ofType(Quantity).value = 2.0", "value.ofType(Quantity).value != %dec",
                    "value.ofType(Quantity).value = 0.1", "code.coding.code = %s",
                    "code.coding.where(code = 'b').empty()"],
        "date": ["value.ofType(dateTime)", "effective.ofType(dateTime)", "%d",
                 "value.ofType(dateTime).highBoundary()"],
        "collection": ["code.coding", "value.ofType(Quantity)"],
    },
}


@functools.cache
def typed(resource_type: str, kind: str, depth: int) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(_LEAVES[resource_type][kind])
    if depth == 0:
        return leaves

    def sub(kind: str) -> st.SearchStrategy[str]:
        return typed(resource_type, kind, depth - 1)

    options: list[st.SearchStrategy[str]] = [leaves]
    if kind == "boolean":
        for op in ("=", "!="):
            for k in ("string", "number", "date", "boolean"):
                options.append(st.builds(lambda a, b, op=op: f"({a}) {op} ({b})", sub(k), sub(k)))
        for op in ("<", ">=", "<=", ">"):
            for k in ("string", "number", "date"):
                options.append(st.builds(lambda a, b, op=op: f"({a}) {op} ({b})", sub(k), sub(k)))
        for op in ("and", "or", "xor", "implies"):
            options.append(st.builds(lambda a, b, op=op: f"({a}) {op} ({b})",
                                     sub("boolean"), sub("boolean")))
        options.append(st.builds(lambda a: f"({a}).not()", sub("boolean")))
        for k in ("string", "collection"):
            options.append(st.builds(lambda a: f"({a}).exists()", sub(k)))
            options.append(st.builds(lambda a: f"({a}).empty()", sub(k)))
    elif kind == "number":
        for op in ("+", "-", "*", "/"):
            options.append(st.builds(lambda a, b, op=op: f"({a}) {op} ({b})",
                                     sub("number"), sub("number")))
        options.append(st.builds(lambda a: f"({a}).count()", sub("collection")))
        # Unary minus only on a certain single number: fhirpathpy 2.2 raises on -{} where
        # FHIRPath says the result is empty (http://hl7.org/fhirpath/N1/#math).
        options.append(st.builds(lambda a: f"-({a})", st.sampled_from(["1", "2.5", "%n",
                                                                       "%dec"])))
    elif kind == "string":
        options.append(st.builds(lambda a, b: f"({a}) & ({b})", sub("string"), sub("string")))
        options.append(st.builds(lambda a, b: f"({a}) + ({b})", sub("string"), sub("string")))
        for fn in ("first()", "last()", "tail().first()"):
            options.append(st.builds(lambda a, fn=fn: f"({a}).{fn}", sub("string")))
        options.append(st.builds(lambda a: f"({a}).join('|')", sub("string")))
    elif kind == "collection":
        options.append(st.builds(lambda a: f"({a}).first()", sub("collection")))
        options.append(st.builds(lambda a: f"({a}).where($this.exists())", sub("collection")))
    return st.one_of(options)


_SCOPE = {t: Scope(CONSTANTS, t) for t in ("Patient", "Observation")}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_generated_expressions_agree(data: st.DataObject) -> None:
    resource_type = data.draw(st.sampled_from(["Patient", "Observation"]))
    resource = data.draw(patients() if resource_type == "Patient" else observations())
    kind = data.draw(st.sampled_from(["string", "number", "boolean", "date", "collection"]))
    text = data.draw(typed(resource_type, kind, 2))
    compiled = assert_tiers_agree(text, resource_type, _SCOPE[resource_type], [resource],
                                  Env(resource, 3))
    event(f"tier: {'compiled' if compiled else 'fhirpathpy'}")
    if compiled and compile_expression(text, resource_type, _SCOPE[resource_type]).test:
        event("direct test")


# Cases hypothesis found once, pinned with FHIRPath N1's answer (sections 6.1.1 and 6.2):
# date/time values of different precision compare as empty, in both tiers.
_TEMPORAL_OBSERVATION = {"resourceType": "Observation", "id": "o1", "status": "final",
                         "valueDateTime": "1970", "effectiveDateTime": "1970-06",
                         "issued": "1970-06-01T00:00:00Z"}


@pytest.mark.parametrize(("text", "expected"), [
    ("(value.ofType(dateTime)) = (effective.ofType(dateTime))", []),
    ("value.ofType(dateTime) != effective.ofType(dateTime)", []),
    ("value.ofType(dateTime) < effective.ofType(dateTime)", []),
    ("issued > effective.ofType(dateTime)", []),
    ("value.ofType(dateTime) <= @1970", [True]),
    ("effective.ofType(dateTime) > @1970-05", [True]),
    ("issued = @1970-06-01T00:00:00Z", [True]),
    ("status < 'z'", [True]),
])
def test_dates_of_different_precision_compare_as_empty(text: str, expected: list[Any]
                                                       ) -> None:
    resource = _TEMPORAL_OBSERVATION
    env = Env(resource)
    scope = _SCOPE["Observation"]
    slow = compile_expression(text, "Observation", scope, allow_compiled=False)
    assert slow([resource], env) == expected
    fast = compile_expression(text, "Observation", scope)
    assert fast([resource], env) == expected
    assert_tiers_agree(text, "Observation", scope, [resource], env)


# --- (3) where criteria with a direct test (fhirpath/item.py) --------------------------------

_CRITERIA = {
    "Patient": ["gender = 'male'", "gender != 'female'", "name.use != %s", "active = true",
                "name.family = 'Smith'", "name.where(use = 'official').exists()",
                "name.exists(use = %s)", "link.other.empty()", "extension.exists()",
                "extension('u3').value.ofType(integer) = 3",
                "extension.where(url = 'u1').empty()", "name.given.exists()"],
    "Observation": ["status = 'final'", "code.coding.where(code = 'a').exists()",
                    "code.coding.exists(system = 'x' and code = 'b')",
                    "value.ofType(Quantity).value = 2.0", "value.ofType(Quantity).value = 0.1",
                    "value.ofType(Quantity).value != %dec", "value.ofType(integer) = %n",
                    "code.coding.code = %s", "value.ofType(Quantity).empty()"],
}


@st.composite
def criteria(draw: st.DrawFn, resource_type: str, depth: int) -> str:
    leaf = st.sampled_from(_CRITERIA[resource_type])
    if depth == 0 or draw(st.booleans()):
        return draw(leaf)
    op = draw(st.sampled_from(["and", "or"]))
    return (f"({draw(criteria(resource_type, depth - 1))}) {op} "
            f"({draw(criteria(resource_type, depth - 1))})")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_direct_tests_of_where_criteria_agree(data: st.DataObject) -> None:
    resource_type = data.draw(st.sampled_from(["Patient", "Observation"]))
    resource = data.draw(patients() if resource_type == "Patient" else observations())
    text = data.draw(criteria(resource_type, 2))
    fast = compile_expression(text, resource_type, _SCOPE[resource_type])
    assert fast.tier == "compiled" and fast.test is not None, text
    assert_tiers_agree(text, resource_type, _SCOPE[resource_type], [resource], Env(resource))
    # and inside where(): the filter applies the test to each item
    wrapped = f"{resource_type}.where({text}).exists()"
    assert_tiers_agree(wrapped, resource_type, _SCOPE[resource_type], [resource], Env(resource))
