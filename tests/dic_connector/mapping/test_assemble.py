"""Streaming assembly: a cohort built chunk by chunk equals the one built from every
resource at once, whatever the chunk size, in Patient-view order."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dic_connector.dev.synthetic import phame_resources, pilot_resources
from dic_connector.mapping import CohortBuilder, assemble_rows, build_cohort, load_mapping
from dic_connector.mapping.cohort import QUERY_VIEW, loads_mapping
from dic_connector.mapping.columns import InvalidValue

from .test_cohort import SQL

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"


def chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def shuffled(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Resources interleaved across types (a patient's Conditions before its Patient)."""
    return resources[1::2] + resources[::2]


@pytest.mark.parametrize(("name", "resources"), [
    ("phame", lambda: shuffled(list(phame_resources(150, seed=3)))),
    ("pilot_adrenal", lambda: list(pilot_resources())),
])
@pytest.mark.parametrize("size", [1, 7, 1000, 10**6])
def test_streamed_equals_batch(name: str, resources: Any, size: int) -> None:
    mapping = load_mapping(MAPPINGS / f"{name}.yaml")
    items = resources()
    orphan = {"resourceType": "Condition", "id": "x", "subject": {"reference": "Patient/zz"},
              "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                   "code": "I10"}]}}
    items.insert(len(items) // 2, orphan)
    batch = build_cohort(mapping, items)
    builder = CohortBuilder(mapping)
    for chunk in chunks(items, size):
        builder.add(chunk)
        chunk.clear()  # the builder keeps view rows, not resources
    streamed = builder.finish()
    assert streamed == batch
    assert streamed.resources == len(items) and len(streamed.rows) > 20
    key = mapping.patient_key.name
    patients = [r["id"] for r in items if r["resourceType"] == "Patient"]
    assert [row[key] for row in streamed.rows] == patients  # Patient-view order
    if name == "phame":
        assert streamed.orphan_rows == 1


@pytest.mark.parametrize("size", [1, 2, 50])
def test_sql_rows_stream_too(size: int) -> None:
    mapping = loads_mapping(SQL, "sql.yaml")
    rows = [{"pid": f"p{i}", "sex": "male" if i % 2 else "female", "weight_kg": 60 + i}
            for i in range(5)]
    builder = CohortBuilder(mapping)
    for chunk in chunks(list(rows), size):
        builder.add(chunk)
    streamed = builder.finish()
    assert streamed.rows == assemble_rows(mapping, {QUERY_VIEW: rows}).rows
    assert [r["weight"] for r in streamed.rows] == [60, 61, 62, 63, 64]
    assert streamed.resources == 5


def test_repeated_strings_are_shared_and_other_values_kept_as_they_are() -> None:
    """The builder keeps one instance per distinct string of a non-key column; a column
    mixing types (``1``, ``1.0``, ``True`` are one dict key) is left alone."""
    mapping = loads_mapping(SQL, "sql.yaml")
    builder = CohortBuilder(mapping)
    rows = [{"pid": f"p{i}", "sex": "".join(["fe", "male"]), "weight_kg": [1, 1.0, True][i % 3]}
            for i in range(9)]
    assert len({id(r["sex"]) for r in rows}) == 9
    for chunk in chunks(rows, 4):
        builder.add(chunk)
    kept = builder._rows[QUERY_VIEW]
    assert len({id(row[1]) for row in kept}) == 1  # (pid, sex, weight_kg)
    assert [type(row[2]) for row in kept] == [int, float, bool] * 3
    assert len({id(row[0]) for row in kept}) == 9  # keys are never merged
    table = builder.finish()
    assert [r["sex"] for r in table.rows] == ["female"] * 9


def test_a_column_of_many_distinct_values_stops_being_shared(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dic_connector.mapping import assemble

    monkeypatch.setattr(assemble._Interner, "limit", 3)
    builder = CohortBuilder(loads_mapping(SQL, "sql.yaml"))
    builder.add([{"pid": f"p{i}", "sex": f"s{i}", "weight_kg": 1} for i in range(5)])
    later = [{"pid": "q", "sex": "".join(["s", "1"]), "weight_kg": 1}]
    builder.add(later)
    assert builder._rows[QUERY_VIEW][-1][1] is later[0]["sex"]
    assert [r["sex"] for r in builder.finish().rows] == ["s0", "s1", "s2", "s3", "s4", "s1"]


def test_the_table_is_held_by_column_and_rows_are_built_only_on_request() -> None:
    mapping = load_mapping(MAPPINGS / "phame.yaml")
    table = build_cohort(mapping, phame_resources(60, seed=3))
    assert "rows" not in table.__dict__  # no dict per patient until asked for
    assert all(len(values) == table.count for values in table.columns.values())
    rows = table.rows
    assert len(rows) == table.count > 20
    assert [row["sex"] for row in rows] == table.columns["sex"]
    table.clear()
    assert table.columns == {} and rows == [] and "rows" not in table.__dict__


def test_patient_keys_are_kept_once_across_views() -> None:
    mapping = load_mapping(MAPPINGS / "phame.yaml")
    resources = list(phame_resources(40, seed=3))
    builder = CohortBuilder(mapping)
    for chunk in chunks(resources, 7):
        builder.add(chunk)
    patients = {row[0]: row[0] for row in builder._rows["patient"]}
    referring = builder._rows["diagnosis"] + builder._rows["coverage"]
    assert referring and all(row[0] is patients[row[0]] for row in referring)
    assert builder.finish() == build_cohort(mapping, resources)
    assert builder._keys == {}  # released with the view rows


PER_PATIENT = """\
format: dic-cohort/1
name: per_patient
query: {sql: "SELECT * FROM t", key: pid}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: dose, kind: numeric, source: dose, unit: Gy}
  - {name: last_seen, kind: date, source: seen, aggregate: max, since: {date: "2000-01-01"},
     unit: days}
  - {name: flagged, kind: boolean, source: code, aggregate: any, codes: ["X"]}
"""


def test_a_cell_its_view_could_not_give_spoils_the_patients_aggregate() -> None:
    """An InvalidValue in one of a patient's rows is the patient's value (one, max, any),
    not 'multiple values' or 'not comparable'; a wrongly typed date among several is found
    even when it would not be the maximum."""
    mapping = loads_mapping(PER_PATIENT, "per_patient.yaml")
    bad = InvalidValue("not computable", "type: number operand (FHIRPath)")
    rows = [{"pid": "a", "dose": 1, "seen": "2020-01-01", "code": "X"},
            {"pid": "a", "dose": bad, "seen": "2019-13-45", "code": bad},
            {"pid": "b", "dose": 2, "seen": "2021-05-01", "code": "Y"},
            {"pid": "b", "dose": 2, "seen": 7, "code": "Y"}]
    table = assemble_rows(mapping, {QUERY_VIEW: rows})
    assert table.columns["dose"] == [bad, 2]
    assert table.columns["flagged"] == [bad, False]
    dates = InvalidValue("not a date", "type: date (YYYY-MM-DD)")
    assert table.columns["last_seen"] == [dates, dates]


def test_a_repeated_element_in_one_record_spoils_its_cell_not_the_cohort() -> None:
    """One course with its dose recorded twice (two ``totalDoseDelivered`` extensions): that
    patient's dose cell says 'several values' and the doses computed from it 'not
    computable' (the columns' policies decide), every other patient and column is built as
    before."""
    mapping = load_mapping(MAPPINGS / "pilot_adrenal.yaml")
    resources = list(pilot_resources("tm"))
    course = next(r for r in resources if r["resourceType"] == "Procedure")
    volume = copy.deepcopy(course["extension"][0])
    dose = next(e for e in volume["extension"] if e["url"] == "totalDoseDelivered")
    volume["extension"].append(dose)
    resources[resources.index(course)] = {**course, "extension": [volume,
                                                                   *course["extension"][1:]]}
    clean = build_cohort(mapping, pilot_resources("tm"))
    got = build_cohort(mapping, resources)
    several = InvalidValue("several values", "cardinality: one value")
    spoiled = [i for i, v in enumerate(got.columns["total_dose"]) if v == several]
    assert len(spoiled) == 1
    for name, values in got.columns.items():
        for i, (value, expected) in enumerate(zip(values, clean.columns[name], strict=True)):
            if i in spoiled and name == "total_dose":
                assert value == several
            elif i in spoiled and name in ("dose_per_fraction", "bed10"):  # arithmetic on two
                assert value == InvalidValue("not computable",
                                             "type: single item operand (FHIRPath)"), name
            else:
                assert value == expected, (name, i)
