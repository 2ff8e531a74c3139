"""The HL7 SQL-on-FHIR v2 conformance suite (``../shared/conformance/sql-on-fhir``).

Every case of every file runs as one test, id ``<file>::<title>``, experimental ones included.
The suite's rules (https://github.com/FHIR/sql-on-fhir-v2, ``tests/README``): ``expect`` lists
the rows, compared without regard to row order; ``expectColumns`` fixes the column names and
their order; ``expectError: true`` means the view must be rejected. Numbers compare by value
(``5`` equals ``5.0`` equals ``Decimal('5')``: computed decimals are Decimals) but never equal
booleans.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from dic_connector.errors import ViewDefinitionError
from dic_connector.mapping import run_view
from dic_connector.sqlonfhir.view import iter_rows
from dic_connector.sqlonfhir.view_compile import compile_view

SUITE_DIR = Path(__file__).parents[3].parent / "shared" / "conformance" / "sql-on-fhir"


def _cases() -> list[Any]:
    if not SUITE_DIR.is_dir():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"SQL-on-FHIR suite absent (looked for {SUITE_DIR})"), id="suite-absent")]
    cases = []
    for path in sorted(SUITE_DIR.glob("*.json")):
        suite = json.loads(path.read_text(encoding="utf-8"))
        for case in suite["tests"]:
            cases.append(pytest.param(suite["resources"], case,
                                      id=f"{path.name}::{case['title']}"))
    return cases


def canonical(value: Any) -> Any:
    """A JSON-comparable form: numbers as floats, booleans kept apart from numbers."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, list):
        return [canonical(item) for item in value]
    if isinstance(value, dict):
        return {key: canonical(item) for key, item in value.items()}
    return value


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(canonical(row), sort_keys=True)


@pytest.mark.parametrize(("resources", "case"), _cases())
def test_case(resources: list[dict[str, Any]], case: dict[str, Any]) -> None:
    if case.get("expectError"):
        with pytest.raises(ViewDefinitionError):
            run_view(case["view"], resources)
        return
    rows = run_view(case["view"], resources)
    assert sorted(map(_row_key, rows)) == sorted(map(_row_key, case["expect"]))
    if "expectColumns" in case:
        for row in rows:
            assert list(row) == case["expectColumns"]


@pytest.mark.parametrize(("resources", "case"), _cases())
def test_case_fhirpathpy_tier(resources: list[dict[str, Any]], case: dict[str, Any]) -> None:
    """The same case with every expression evaluated by fhirpathpy (the fallback tier)."""
    if case.get("expectError"):
        with pytest.raises(ViewDefinitionError):
            list(iter_rows(compile_view(case["view"], allow_compiled=False), resources))
        return
    rows = list(iter_rows(compile_view(case["view"], allow_compiled=False), resources))
    assert sorted(map(_row_key, rows)) == sorted(map(_row_key, case["expect"]))
