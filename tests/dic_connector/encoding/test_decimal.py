"""FHIR decimals keep their written digits from the parsed resource to the encoded matrix.

JSON parsed with ``json.loads(..., parse_float=Decimal)`` gives ``Decimal('1.50')`` where plain
``json.loads`` gives ``1.5`` and loses the written precision, which FHIR says is significant
(https://hl7.org/fhir/R4/datatypes.html#decimal) and ``lowBoundary()``/``highBoundary()``
depend on. Both tiers, the type checks, validation and encoding take Decimals as they are.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from dic_connector.encoding import encode_table, validate_rows
from dic_connector.mapping import loads_mapping
from dic_connector.mapping.assemble import build_cohort
from dic_connector.sqlonfhir.view import iter_rows
from dic_connector.sqlonfhir.view_compile import compile_view

OBSERVATIONS = """
{"resourceType": "Observation", "id": "o1", "status": "final",
 "subject": {"reference": "Patient/p1"}, "valueQuantity": {"value": 1.50, "unit": "mg"}}
{"resourceType": "Observation", "id": "o2", "status": "final",
 "subject": {"reference": "Patient/p2"}, "valueQuantity": {"value": 2.0, "unit": "mg"}}
{"resourceType": "Observation", "id": "o3", "status": "final",
 "subject": {"reference": "Patient/p3"}, "valueQuantity": {"value": 0.1, "unit": "mg"}}
"""
VIEW = {"resource": "Observation", "select": [{"column": [
    {"name": "id", "path": "id"},
    {"name": "value", "path": "value.ofType(Quantity).value", "type": "decimal"},
    {"name": "low", "path": "value.ofType(Quantity).value.lowBoundary()", "type": "decimal"},
    {"name": "high", "path": "value.ofType(Quantity).value.highBoundary()", "type": "decimal"},
    {"name": "doubled", "path": "value.ofType(Quantity).value * 2"},
    {"name": "is_tenth", "path": "value.ofType(Quantity).value = 0.1"},
    {"name": "above", "path": "value.ofType(Quantity).value > 0.1"},
]}]}


def parse(text: str, exact: bool) -> list[dict[str, Any]]:
    records = " ".join(text.strip().splitlines()).replace("} {", "}\n{").splitlines()
    if exact:
        return [json.loads(r, parse_float=Decimal) for r in records]
    return [json.loads(r) for r in records]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_written_digits_set_the_boundaries(compiled: bool) -> None:
    rows = list(iter_rows(compile_view(VIEW, allow_compiled=compiled),
                          parse(OBSERVATIONS, exact=True)))
    assert rows == [
        {"id": "o1", "value": Decimal("1.50"), "low": Decimal("1.495"),
         "high": Decimal("1.505"), "doubled": Decimal("3.00"), "is_tenth": False,
         "above": True},
        {"id": "o2", "value": Decimal("2.0"), "low": Decimal("1.95"), "high": Decimal("2.05"),
         "doubled": Decimal("4.0"), "is_tenth": False, "above": True},
        {"id": "o3", "value": Decimal("0.1"), "low": Decimal("0.05"), "high": Decimal("0.15"),
         "doubled": Decimal("0.2"), "is_tenth": True, "above": False},
    ]
    assert all(type(v) is Decimal for row in rows for k, v in row.items()
               if k not in ("id", "is_tenth", "above"))
    assert str(rows[0]["low"]) == "1.495" and str(rows[1]["value"]) == "2.0"


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "fhirpathpy"])
def test_plain_json_floats_lose_trailing_zeros(compiled: bool) -> None:
    """What parse_float=Decimal prevents: 1.50 read as 1.5 has precision 1."""
    rows = list(iter_rows(compile_view(VIEW, allow_compiled=compiled),
                          parse(OBSERVATIONS, exact=False)))
    assert rows[0]["value"] == 1.5 and type(rows[0]["value"]) is float
    assert (rows[0]["low"], rows[0]["high"]) == (Decimal("1.45"), Decimal("1.55"))
    # 2.0 keeps its one decimal place even as a float (its shortest repr is "2.0")
    assert (rows[1]["low"], rows[1]["high"]) == (Decimal("1.95"), Decimal("2.05"))
    # The compiled tier takes a float by its shortest repr, so 0.1 = 0.1 as FHIRPath says;
    # fhirpathpy 2.2 compares a float element with a decimal literal by the float's binary
    # value (0.1 != 0.1). With parse_float=Decimal (the test above) both tiers agree.
    assert [row["is_tenth"] for row in rows] == [False, False, compiled]


MAPPING = """
format: dic-cohort/1
name: decimals
version: 1
views:
  - name: patient
    key: id
    view:
      resource: Patient
      select:
        - column:
            - {name: id, path: getResourceKey()}
  - name: dose
    key: patient
    view:
      resource: Observation
      select:
        - column:
            - {name: patient, path: subject.getReferenceKey(Patient)}
            - {name: value, path: value.ofType(Quantity).value}
            - {name: third, path: value.ofType(Quantity).value / 3}
columns:
  - name: patient_key
    kind: patient_key
    source: patient.id
  - name: dose
    kind: numeric
    source: dose.value
    unit: mg
    scale: 2
    min: 0
    max: 10
  - name: third
    kind: numeric
    source: dose.third
    unit: mg
    scale: 3
    min: 0
    max: 10
"""


def test_decimals_go_through_validation_and_encoding_exactly() -> None:
    mapping = loads_mapping(MAPPING, "decimals.yaml")
    patients = [{"resourceType": "Patient", "id": f"p{i}"} for i in (1, 2, 3)]
    table = build_cohort(mapping, [*patients, *parse(OBSERVATIONS, exact=True)])
    assert [row["dose"] for row in table.rows] == [Decimal("1.50"), Decimal("2.0"),
                                                   Decimal("0.1")]
    clean, report, _ = validate_rows(table.rows, mapping)
    assert report.rows_rejected == 0
    assert clean[0]["dose"] == Decimal("1.50") and type(clean[0]["third"]) is Decimal
    encoded = encode_table(clean, mapping)
    assert encoded.column("dose").tolist() == [150, 200, 10]
    assert encoded.column("third").tolist() == [500, 667, 33]  # 0.5, 0.667, 0.033
