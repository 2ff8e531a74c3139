"""``first``/``last`` order rows by instant with FHIRPath's partial precision; an
incomparable pair that decides the winner is an invalid value, counted by validation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dic_connector.encoding import validate_rows
from dic_connector.mapping import build_cohort, loads_mapping
from dic_connector.mapping.columns import InvalidValue
from dic_connector.mapping.ordering import compare, pick, temporal_key

from .test_cohort import BASE

BMI = BASE.replace("unit: kg", "unit: kg/m2")


def last(*keys: Any) -> Any:
    """The index of the ``last`` row among rows ordered by ``keys``."""
    return pick([(k, i) for i, k in enumerate(keys)], True, "obs.when")


def first(*keys: Any) -> Any:
    return pick([(k, i) for i, k in enumerate(keys)], False, "obs.when")


def test_mixed_offsets_order_by_instant_for_ten_patients() -> None:
    """Ten patients, each with BMIs written in different offsets: the latest instant wins,
    where string order takes another value for nine of them."""
    resources: list[dict[str, Any]] = []
    expected: list[int] = []
    for p in range(10):
        pid = f"p{p}"
        resources.append({"resourceType": "Patient", "id": pid, "gender": "male",
                          "birthDate": "1950-01-01"})
        # 10:00+02:00 is 08:00Z: earlier than 09:00Z although it sorts later as text
        when = [f"2024-03-0{p % 9 + 1}T09:00:00Z", f"2024-03-0{p % 9 + 1}T10:00:00+02:00",
                f"2024-03-0{p % 9 + 1}T04:30:00-03:00"]  # 07:30Z
        if p == 0:
            when[0] = "2024-03-01T07:00:00Z"  # here string order happens to agree
        values = [20 + p, 30 + p, 40 + p]
        instants = [dt.datetime.fromisoformat(w) for w in when]
        expected.append(values[max(range(3), key=lambda i: instants[i])])
        for k, (w, v) in enumerate(zip(when, values, strict=True)):
            resources.append({"resourceType": "Observation", "id": f"{pid}-{k}",
                              "subject": {"reference": f"Patient/{pid}"},
                              "effectiveDateTime": w,
                              "valueQuantity": {"value": v, "unit": "kg/m2"}})
    rows = build_cohort(loads_mapping(BMI, "bmi.yaml"), resources).rows
    assert [r["weight"] for r in rows] == expected
    textual = [30 + p for p in range(10)]  # what string order takes: the 10:00+02:00 row
    assert expected == [30] + [20 + p for p in range(1, 10)]
    assert sum(a != b for a, b in zip(expected, textual, strict=True)) == 9


@pytest.mark.parametrize(("a", "b", "order"), [
    ("2024", "2024-03-01", None),  # tie at the common precision: incomparable
    ("2023", "2024-03-01", -1),
    ("2024-03", "2024-03-01T10:00:00Z", None),
    ("2024-03-01", "2024-03-02T10:00:00+02:00", -1),
    # a date against a dateTime: the dateTime's local date, not its UTC date
    ("2024-03-01", "2024-03-01T23:30:00-02:00", None),
    ("2024-03-02", "2024-03-01T23:30:00-02:00", 1),
    ("2024-03-01T10:00:00+02:00", "2024-03-01T09:00:00Z", -1),
    ("2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00Z", 0),
    ("2024-03-01T10:00:00.5Z", "2024-03-01T10:00:00Z", 1),
    ("2024-03-01T10:00Z", "2024-03-01T10:00:00Z", None),  # minutes vs seconds
    # no zone (a SQL timestamp): local times among themselves, dates against zoned ones
    ("2024-03-01T10:00:00", "2024-03-01T09:00:00", 1),
    ("2024-03-01T10:00:00", "2024-03-01T09:00:00Z", None),
    ("2024-03-02T01:00:00", "2024-03-01T23:00:00Z", 1),
])
def test_compare(a: str, b: str, order: int | None) -> None:
    ka, kb = temporal_key(a), temporal_key(b)
    assert ka is not None and kb is not None
    assert compare(ka, kb) == order
    assert compare(kb, ka) == (None if order is None else -order)


def test_partial_precision_decides_only_when_it_must() -> None:
    assert isinstance(last("2024", "2024-03-01"), InvalidValue)
    assert isinstance(first("2024", "2024-03-01"), InvalidValue)
    assert last("2023", "2024-03-01") == 1 and first("2023", "2024-03-01") == 0
    # 2024 vs 2024-03-01 are incomparable, but 2025-01-01 beats both: it decides alone
    assert last("2024", "2024-03-01", "2025-01-01") == 2
    assert isinstance(first("2024", "2024-03-01", "2025-01-01"), InvalidValue)
    error = last("2024", "2024-03-01")
    assert (error.value_class, error.rule) == ("not comparable", "order_by 'obs.when'")


def test_ties_numbers_sql_values_and_garbage() -> None:
    assert last("2024-01-01", "2024-01-01") == 1 and first("2024-01-01", "2024-01-01") == 0
    assert last(3, Decimal("2.5"), 10.0) == 2 and first(3, Decimal("2.5"), 10.0) == 1
    assert isinstance(last(3, "2024-01-01"), InvalidValue)
    tz = dt.timezone(dt.timedelta(hours=2))
    assert last(dt.datetime(2024, 3, 1, 10, tzinfo=tz),
                dt.datetime(2024, 3, 1, 9, tzinfo=dt.UTC)) == 1
    assert last(dt.date(2024, 3, 1), dt.date(2023, 12, 31)) == 0
    error = last("yesterday", "2024-01-01")
    assert isinstance(error, InvalidValue) and error.value_class == "not a date"
    assert "yesterday" not in str(error)
    for impossible in ("2024-02-30T10:00:00Z", "0001-01-01T00:30:00+01:00"):
        error = last(impossible, "2024-01-01T10:00:00Z")
        assert isinstance(error, InvalidValue) and error.value_class == "not a date"
    assert last("yesterday") == 0  # one row: nothing to compare


def test_not_comparable_is_rejected_by_the_column_policy() -> None:
    mapping = loads_mapping(BMI, "bmi.yaml")
    resources: list[dict[str, Any]] = []
    for pid, dates in (("a", ["2024", "2024-03-01"]), ("b", ["2023", "2024-03-01"])):
        resources.append({"resourceType": "Patient", "id": pid, "gender": "female",
                          "birthDate": "1970-01-01"})
        resources += [{"resourceType": "Observation", "id": f"{pid}{k}",
                       "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": d,
                       "valueQuantity": {"value": 25 + k}} for k, d in enumerate(dates)]
    clean, report, positions = validate_rows(build_cohort(mapping, resources).rows, mapping)
    assert positions == (1,) and clean[0]["weight"] == 26
    assert report.rejected == {("weight", "not comparable", "order_by 'obs.when'"): 1}
    fatal = loads_mapping(BMI.replace("    max: 400\n", "    max: 400\n    on_invalid: "
                                      "fail_dataset\n"), "bmi.yaml")
    from dic_connector.errors import DataValidationError
    with pytest.raises(DataValidationError, match="row 0, column 'weight': not comparable"):
        validate_rows(build_cohort(fatal, resources).rows, fatal)


OFFSETS = st.integers(-12 * 4, 14 * 4).map(lambda q: dt.timezone(dt.timedelta(minutes=15 * q)))
INSTANTS = st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2030, 1, 1),
                        timezones=OFFSETS).map(lambda d: d.replace(microsecond=d.microsecond
                                                                   // 1000 * 1000))


def written(moment: dt.datetime) -> str:
    text = moment.isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z") if moment.microsecond % 2 else text


@given(st.lists(INSTANTS, min_size=1, max_size=8), st.booleans(), st.booleans())
def test_full_precision_agrees_with_datetime_objects(moments: list[dt.datetime], latest: bool,
                                                     with_old_date: bool) -> None:
    """Against a reference on aware datetimes: the first row of the earliest instant, or
    the last row of the latest (an old date-only value, when added, is comparable with all
    and takes the other path)."""
    keys: list[Any] = [written(m) for m in moments]
    reference: list[Any] = list(moments)
    if with_old_date:
        keys.insert(0, "1999-12-30")
        reference.insert(0, dt.datetime(1999, 12, 30, tzinfo=dt.UTC))
    order = range(len(keys))
    if latest:
        top = max(reference)
        want = max(i for i in order if reference[i] == top)
    else:
        bottom = min(reference)
        want = min(i for i in order if reference[i] == bottom)
    assert (last if latest else first)(*keys) == want
