"""encode_table: integers only, fixed point in decimal, one-hot categoricals, indicators."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.encoding.encode import encode_columns, encode_table
from dic_connector.encoding.validate import validate_columns, validate_rows
from dic_connector.errors import DataValidationError
from dic_connector.mapping.cohort import CohortMapping, loads_mapping

MAPPING = """\
format: dic-cohort/1
name: enc
query: {sql: "SELECT * FROM t", key: pid}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: dose, kind: numeric, source: dose, unit: Gy, scale: 2}
  - {name: gender, kind: categorical, source: gender, levels: [male, female]}
  - {name: response, kind: categorical, source: response, levels: [CR, PR, SD, PD],
     missing: indicator}
  - {name: dead, kind: boolean, source: dead}
  - {name: start, kind: date, source: start, since: {date: "2020-01-01"}, unit: days,
     export: false}
  - {name: follow_up, kind: date, source: last, since: {column: start}, unit: months,
     scale: 1}
"""


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return loads_mapping(MAPPING, "enc.yaml")


def raw(**kw: Any) -> dict[str, Any]:
    base = {"patient_key": "x", "dose": 2.675, "gender": "female", "response": "SD",
            "dead": True, "start": "2020-01-11", "follow_up": "2021-01-11"}
    return base | kw


def test_shape_names_and_values(mapping: CohortMapping) -> None:
    clean, _, _ = validate_rows([raw(), raw(gender="male", response=None, dead=False)], mapping)
    enc = encode_table(clean, mapping)
    assert enc.values.dtype == np.int64 and enc.values.shape == (2, 12)
    assert enc.names == ("dose", "gender", "gender=male", "gender=female", "response",
                         "response=CR", "response=PR", "response=SD", "response=PD",
                         "response__present", "dead", "follow_up")
    assert enc.column("dose").tolist() == [268, 268]  # decimal half-even, not float 267
    assert enc.column("gender").tolist() == [1, 0]
    assert enc.column("gender=female").tolist() == [1, 0]
    assert enc.column("response").tolist() == [2, 0]
    assert enc.column("response=SD").tolist() == [1, 0]
    assert enc.column("response__present").tolist() == [1, 0]
    assert enc.column("dead").tolist() == [1, 0]
    assert enc.column("follow_up").tolist() == [120, 120]  # 366 days = 12.0 months
    assert "patient_key" not in enc.names and "start" not in enc.names


def test_manifest(mapping: CohortMapping) -> None:
    clean, _, _ = validate_rows([raw()], mapping)
    manifest = {m["name"]: m for m in encode_table(clean, mapping).manifest()}
    assert manifest["dose"] == {"name": "dose", "kind": "numeric", "column": "dose",
                                "scale": 2, "unit": "Gy"}
    assert manifest["gender"]["levels"] == ["male", "female"]
    assert manifest["gender=male"] == {"name": "gender=male", "kind": "one_hot",
                                       "column": "gender", "scale": 0, "level": "male"}
    assert manifest["response__present"]["kind"] == "present"
    assert manifest["follow_up"]["unit"] == "months" and manifest["follow_up"]["scale"] == 1
    assert "origin" not in manifest["follow_up"]  # counted from another column


def test_a_date_since_a_fixed_date_declares_its_origin() -> None:
    """A filter can then compare it with an ISO date (analyses.filters)."""
    exported = loads_mapping(MAPPING.replace(", unit: days,\n     export: false}",
                                             ", unit: days}"), "enc.yaml")
    clean, _, _ = validate_rows([raw()], exported)
    manifest = {m["name"]: m for m in encode_table(clean, exported).manifest()}
    assert manifest["start"] == {"name": "start", "kind": "date", "column": "start",
                                 "scale": 0, "unit": "days", "origin": "2020-01-01"}
    assert encode_table(clean, exported).column("start").tolist() == [10]


def test_one_hot_rows_sum_to_presence(mapping: CohortMapping) -> None:
    rows = [raw(response=r) for r in ("CR", "PR", None, "PD", "SD", None)]
    clean, _, _ = validate_rows(rows, mapping)
    enc = encode_table(clean, mapping)
    hot = np.stack([enc.column(f"response={lv}") for lv in ("CR", "PR", "SD", "PD")], axis=1)
    assert hot.sum(axis=1).tolist() == enc.column("response__present").tolist()
    assert hot.sum(axis=0).tolist() == [1, 1, 1, 1]


def test_unvalidated_missing_is_refused(mapping: CohortMapping) -> None:
    clean, _, _ = validate_rows([raw()], mapping)
    clean[0]["dose"] = None
    with pytest.raises(DataValidationError, match=r"row 0, column 'dose': missing"):
        encode_table(clean, mapping)


def test_out_of_int64_range(mapping: CohortMapping) -> None:
    """Validation rejects the row (a per-value rule, under the column's policy); the
    encoder still refuses such a value handed to it unvalidated."""
    clean, report, _ = validate_rows([raw(dose=1e18), raw()], mapping)
    assert len(clean) == 1
    assert report.rejected == {("dose", "above maximum", "64-bit range at scale 2"): 1}
    clean[0]["dose"] = -1e18
    with pytest.raises(DataValidationError, match="64-bit range"):
        encode_table(clean, mapping)


def test_empty_table(mapping: CohortMapping) -> None:
    enc = encode_table([], mapping)
    assert enc.values.shape == (0, 12)


@settings(max_examples=200, deadline=None)
@given(st.decimals(min_value=-10**6, max_value=10**6, places=2, allow_nan=False))
def test_fixed_point_round_trips(mapping: CohortMapping, value: Decimal) -> None:
    for source in (float(value), str(value)):
        clean, _, _ = validate_rows([raw(dose=source)], mapping)
        assert Decimal(int(encode_table(clean, mapping).column("dose")[0])) / 100 == value


def test_columns_encoding_equals_the_matrix_and_is_produced_and_wiped_column_by_column(
        mapping: CohortMapping) -> None:
    rows = [raw(), raw(gender="male", response=None, dead=False, dose=1),
            raw(response="PD", dose=Decimal("0.295"))]
    clean, _, _ = validate_rows(rows, mapping)
    expected = encode_table(clean, mapping)
    checked = validate_columns({name: [row.get(name) for row in rows] for name in rows[0]},
                               len(rows), mapping)
    encoded = encode_columns(checked.columns, checked.rows, mapping)
    assert encoded.columns == expected.columns and encoded.rows == 3
    produced = encoded.matrix_columns()
    first = next(produced)
    assert first.tolist() == expected.column("dose").tolist()
    assert not encoded.cleared  # the other columns are still to come
    rest = list(produced)
    assert np.array_equal(np.stack([first, *rest], axis=1), expected.values)
    assert encoded.cleared  # every prepared array zeroed and dropped once exhausted


def test_columns_encoding_cleared_before_exhausted_keeps_nothing(mapping: CohortMapping
                                                                 ) -> None:
    clean, _, _ = validate_rows([raw(), raw(dose=3)], mapping)
    encoded = encode_columns({n: [row[n] for row in clean] for n in clean[0]}, 2, mapping)
    prepared = [b.values for b in encoded._blocks]
    encoded.clear()
    assert encoded.cleared and list(encoded.matrix_columns()) == []
    assert not any(a.any() for a in prepared)


def test_columns_encoding_whole_numbers_out_of_range_fail(mapping: CohortMapping) -> None:
    encoded = None
    with pytest.raises(DataValidationError, match="64-bit"):
        encoded = encode_columns({"dose": [2**62, 1], "gender": ["male"] * 2,
                                  "response": [None] * 2, "dead": [True] * 2,
                                  "follow_up": [1, 2]}, 2, mapping)
    assert encoded is None
