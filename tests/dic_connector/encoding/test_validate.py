"""validate_rows: types, ranges, policies, and reports that never contain a value."""

from __future__ import annotations

import datetime as dt
import pickle
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.encoding.convert import convert_column
from dic_connector.encoding.validate import validate_columns, validate_rows
from dic_connector.errors import DataValidationError
from dic_connector.mapping.cohort import CohortMapping, loads_mapping
from dic_connector.mapping.columns import TYPE_RULES, InvalidValue, NumericRule, coerce

SQL_MAPPING = """\
format: dic-cohort/1
name: checks
query: {sql: "SELECT * FROM t", key: pid}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: weight, kind: numeric, source: weight, unit: kg, scale: 1, min: 1, max: 400}
  - {name: stage, kind: categorical, source: stage, levels: [I, II, III],
     map: {"1": I, "2": II, "3": III}}
  - {name: smoker, kind: categorical, source: smoker, levels: ["yes", "no", other],
     other: other, missing: indicator}
  - {name: diabetic, kind: boolean, source: diabetic, on_invalid: fail_dataset}
  - {name: birth, kind: date, source: birth, since: {date: "1900-01-01"}, unit: days,
     export: false}
  - {name: age, kind: date, source: seen, since: {column: birth}, unit: years, min: 0,
     max: 120}
  - {name: months, kind: date, source: seen, since: {date: "2020-01-01"}, unit: months,
     scale: 1, missing: fail_dataset}
"""


@pytest.fixture(scope="module")
def mapping() -> CohortMapping:
    return loads_mapping(SQL_MAPPING, "checks.yaml")


def row(**changes: Any) -> dict[str, Any]:
    """A raw (assembled) row: keyed by typed column name, values as the views give them."""
    base: dict[str, Any] = {"patient_key": "P-1", "weight": 72.5, "stage": "2",
                            "smoker": "no", "diabetic": False, "birth": "1960-02-29",
                            "age": "2020-02-28", "months": "2021-07-01"}
    base.update(changes)
    return base


def test_good_row_is_typed(mapping: CohortMapping) -> None:
    clean, report, positions = validate_rows([row()], mapping)
    assert report.rows_rejected == 0 and positions == (0,)
    r = clean[0]
    assert (r["weight"], r["stage"], r["smoker"], r["diabetic"]) == (72.5, "II", "no", False)
    assert r["age"] == 59  # the day before the (leap-year) birthday: still 59
    assert r["months"] == 18.0  # 547 days / 30.4375 = 17.97 -> 18.0


@pytest.mark.parametrize(("column", "raw", "value_class"), [
    ("weight", 400.1, "above maximum"),
    ("weight", 0.5, "below minimum"),
    ("weight", "heavy", "not a number"),
    ("weight", True, "not a number"),
    ("weight", "nan", "not finite"),
    ("stage", "IV", "unknown level"),
    ("stage", ["1"], "not a code"),
    ("birth", "1960", "not a date"),
    ("birth", "1960-02-30", "not a date"),
    ("age", "1850-01-01", "below minimum"),
])
def test_bad_value_rejects_row_without_naming_value(mapping: CohortMapping, column: str,
                                                    raw: Any, value_class: str) -> None:
    table = [row(), row(**{column: raw}), row()]
    clean, report, positions = validate_rows(table, mapping)
    assert positions == (0, 2) and len(clean) == 2
    assert report.rows_rejected == 1
    counts = {key[:2]: n for key, n in report.rejected.items()}
    assert counts[(column, value_class)] == 1
    error = report.errors[0]
    assert (error.row, error.column, error.value_class) == (1, column, value_class)
    text = str(error) + str(report.as_dict())
    assert str(raw) not in text and "P-1" not in text


@pytest.mark.parametrize(("column", "raw", "value_class", "rule"), [
    ("weight", "abc", "not a number", "type: number"),
    ("weight", "12,5", "not a number", "type: number"),  # a decimal comma is text
    ("weight", "", "not a number", "type: number"),
    ("weight", {"value": 80}, "not a number", "type: number"),  # a JSON object
    ("weight", [80, 81], "not a number", "type: number"),
    ("weight", Decimal("NaN"), "not finite", "type: number"),
    ("weight", "1e400", "not finite", "type: number"),
    ("stage", {"code": "1"}, "not a code", "type: code (text or number)"),
    ("stage", True, "not a code", "type: code (text or number)"),
    ("smoker", ["no"], "not a code", "type: code (text or number)"),
    ("age", "2020-13-45", "not a date", "type: date (YYYY-MM-DD)"),
    ("age", 19600229, "not a date", "type: date (YYYY-MM-DD)"),
    ("age", {"date": "2020-02-28"}, "not a date", "type: date (YYYY-MM-DD)"),
    ("months", "garbage-date", "not a date", "type: date (YYYY-MM-DD)"),
    # a view cell its path could not compute is counted under its own class and rule
    ("weight", InvalidValue("not computable", "type: number operand (FHIRPath)"),
     "not computable", "type: number operand (FHIRPath)"),
])
def test_a_value_of_the_wrong_type_is_a_per_value_error_like_a_range_error(
        mapping: CohortMapping, column: str, raw: Any, value_class: str, rule: str) -> None:
    """Counted per (column, value class, rule ``type: ...``) and the row rejected under
    ``on_invalid: reject_row``, the rest of the table kept; the report never holds the value;
    by column as by row."""
    table = [row(), row(**{column: raw}), row(weight=0.5), row()]
    clean, report, positions = validate_rows(table, mapping)
    assert positions == (0, 3) and len(clean) == 2 and report.rows_rejected == 2
    assert report.rejected == {(column, value_class, rule): 1,
                               ("weight", "below minimum", "min 1"): 1}
    assert [str(e) for e in report.errors] == [
        f"row 1, column {column!r}: {value_class} ({rule})",
        "row 2, column 'weight': below minimum (min 1)"]
    assert {"column": column, "value_class": value_class, "rule": rule, "rows": 1} in \
        report.as_dict()["rejected"]
    by_column = validate_columns({n: [r.get(n) for r in table] for n in table[0]},
                                 len(table), mapping)
    assert by_column.report == report


@pytest.mark.parametrize(("raw", "text"), [
    ("maybe", "not a boolean (type: boolean (true or false))"),
    ({"value": True}, "not a boolean (type: boolean (true or false))"),
    (1, "not a boolean (type: boolean (true or false))"),
    (InvalidValue("wrong type", "type: boolean"), "wrong type (type: boolean)"),
])
def test_a_value_of_the_wrong_type_under_fail_dataset_fails_the_dataset(
        mapping: CohortMapping, raw: Any, text: str) -> None:
    """As an out-of-range value would: the error names the row position, the column and what
    was expected, never the value."""
    with pytest.raises(DataValidationError) as caught:
        validate_rows([row(), row(diabetic=raw), row()], mapping)
    message = str(caught.value)
    assert message == f"row 1, column 'diabetic': {text}; policy on_invalid: fail_dataset"
    assert "maybe" not in message and "value" not in message


def test_type_rules_are_safe_labels() -> None:
    """Rules become metric labels and run-history keys (``column/class/rule``)."""
    assert all(rule.startswith("type: ") and "/" not in rule for rule in TYPE_RULES.values())


def test_sql_dates_and_timestamps_are_dates(mapping: CohortMapping) -> None:
    """A SQL source gives DATE and TIMESTAMP columns as date / datetime objects."""
    clean, report, _ = validate_rows(
        [row(birth=dt.date(1960, 2, 29), seen=None, age=dt.datetime(2020, 2, 28, 23, 59),
             months=dt.datetime(2021, 7, 1, 8, 30))], mapping)
    assert report.rows_rejected == 0
    assert (clean[0]["age"], clean[0]["months"]) == (59, 18.0)


def test_numbers_beyond_the_64_bit_encoding_are_rejected_per_value(
        mapping: CohortMapping) -> None:
    """``weight`` has scale 1 and max 400; a column without a max is bounded by 64 bits."""
    unbounded = [c if c.name != "weight" else replace(c, rule=NumericRule("kg", scale=1))
                 for c in mapping.columns]
    clean, report, _ = validate_rows([row(weight=10**18), row(weight=-(10**18)),
                                      row(weight=9.2e17), row()], unbounded)
    assert report.rejected == {("weight", "above maximum", "64-bit range at scale 1"): 1,
                               ("weight", "below minimum", "64-bit range at scale 1"): 1}
    assert [r["weight"] for r in clean] == [9.2e17, 72.5]


def test_invalid_values_pickle_and_compare_by_class_and_rule() -> None:
    """View cells come back from worker processes pickled."""
    cell = InvalidValue("wrong type", "type: decimal")
    again = pickle.loads(pickle.dumps(cell))
    assert again == cell and hash(again) == hash(cell)
    assert (again.value_class, again.rule, str(again)) == (
        "wrong type", "type: decimal", "wrong type (type: decimal)")
    assert cell != InvalidValue("wrong type", "type: integer")


def test_numeric_strings_are_numbers(mapping: CohortMapping) -> None:
    clean, _, _ = validate_rows([row(weight="80.25"), row(weight="81")], mapping)
    assert [r["weight"] for r in clean] == [80.25, 81]


def test_other_level_and_indicator(mapping: CohortMapping) -> None:
    clean, report, _ = validate_rows([row(smoker="former"), row(smoker=None)], mapping)
    assert [r["smoker"] for r in clean] == ["other", None]
    assert report.missing_kept == {"smoker": 1}


def test_missing_reject_row_is_counted(mapping: CohortMapping) -> None:
    _, report, _ = validate_rows([row(weight=None), row(stage=None, weight=None)], mapping)
    assert report.rows_rejected == 2
    assert report.rejected[("weight", "missing", "missing: reject_row")] == 2
    assert report.rejected[("stage", "missing", "missing: reject_row")] == 1


def test_fail_dataset_on_invalid(mapping: CohortMapping) -> None:
    with pytest.raises(DataValidationError) as caught:
        validate_rows([row(), row(), row(diabetic="maybe")], mapping)
    message = str(caught.value)
    assert message.startswith("row 2, column 'diabetic': not a boolean")
    assert "fail_dataset" in message and "maybe" not in message


def test_fail_dataset_even_after_reject(mapping: CohortMapping) -> None:
    """A row already rejected by one column still fails the dataset for another."""
    with pytest.raises(DataValidationError, match="row 0, column 'diabetic'"):
        validate_rows([row(weight=-1, diabetic=3)], mapping)


def test_fail_dataset_on_missing(mapping: CohortMapping) -> None:
    with pytest.raises(DataValidationError, match=r"row 1, column 'months': missing"):
        validate_rows([row(), row(months=None)], mapping)


def test_aggregation_failure_is_reported(mapping: CohortMapping) -> None:
    bad = row(stage=InvalidValue("multiple values", "aggregate 'one': one value per patient"))
    _, report, _ = validate_rows([bad], mapping)
    assert report.errors[0].value_class == "multiple values"
    assert report.as_dict()["rejected"][0]["column"] == "stage"


def test_missing_origin_makes_value_missing(mapping: CohortMapping) -> None:
    _, report, _ = validate_rows([row(birth=None)], mapping)
    assert set(report.rejected) == {("birth", "missing", "missing: reject_row"),
                                    ("age", "missing", "missing: reject_row")}


def test_error_list_is_capped_but_all_counted(mapping: CohortMapping) -> None:
    _, report, _ = validate_rows([row(weight=0)] * 250, mapping)
    assert len(report.errors) == 100
    assert report.rows_rejected == 250 and report.rows_out == 0


_RAW = st.one_of(st.none(), st.booleans(), st.integers(-10, 500),
                 st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(
                     ["1", "2", "3", "I", "IV", "yes", "no", "former", "true", "80.5", "x",
                      "2020-02-29", "2021-13-01", "1960", "2019-06-30T10:00:00Z"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_RAW, _RAW, _RAW, _RAW), min_size=1, max_size=8))
def test_column_fast_paths_agree_with_single_value_rules(
        mapping: CohortMapping, cells: list[tuple[Any, Any, Any, Any]]) -> None:
    """convert_column (fast paths) == coerce (the rules, one value at a time)."""
    specs = [mapping.column(n) for n in ("weight", "stage", "smoker", "birth")]
    for i, spec in enumerate(specs):
        raws = [c[i] for c in cells]
        values, failures = convert_column(spec, raws, {}, {})
        failed = dict(failures)
        for pos, raw in enumerate(raws):
            try:
                expected = coerce(spec, raw, {}, {})
            except InvalidValue as exc:
                assert failed[pos].value_class == exc.value_class
                continue
            assert pos not in failed and values[pos] == expected


def test_columns_give_what_rows_give(mapping: CohortMapping) -> None:
    """validate_columns: the clean rows of validate_rows, by column; a column absent from
    the table is all missing (here 'smoker', kept under missing: indicator)."""
    rows = [row(), row(weight=900), row(stage="7", smoker=None), row(patient_key="P-4")]
    for table in (rows, [{k: v for k, v in r.items() if k != "smoker"} for r in rows]):
        clean, report, positions = validate_rows(table, mapping)
        names = {name for r in table for name in r}
        by_column = validate_columns({n: [r.get(n) for r in table] for n in names},
                                     len(table), mapping)
        assert by_column.rows == len(clean) == 2 and by_column.positions == positions
        assert by_column.report == report and report.rows_rejected == 2
        assert [dict(zip(by_column.columns, cells, strict=True))
                for cells in zip(*by_column.columns.values(), strict=True)] == clean
