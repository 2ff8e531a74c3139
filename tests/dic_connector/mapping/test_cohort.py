"""Mapping files: the shipped ones load; broken ones name file, line, JSON path and rule."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from dic_connector.errors import MappingFileError
from dic_connector.mapping.assemble import assemble_rows
from dic_connector.mapping.cohort import (
    QUERY_VIEW,
    load_mapping,
    loads_mapping,
    mapping_schema,
)
from dic_connector.mapping.columns import (
    Aggregate,
    CategoricalRule,
    ColumnKind,
    DateRule,
    DateUnit,
    InvalidValue,
    Missing,
)

MAPPINGS = Path(__file__).resolve().parents[3] / "mappings"

BASE = """\
format: dic-cohort/1
name: tiny
views:
  - name: patient
    key: id
    view:
      resource: Patient
      select:
        - column:
            - {name: id, path: getResourceKey()}
            - {name: gender, path: gender}
            - {name: birth, path: birthDate}
  - name: obs
    key: patient
    view:
      resource: Observation
      select:
        - column:
            - {name: patient, path: subject.getReferenceKey(Patient)}
            - {name: when, path: effective.ofType(dateTime)}
            - {name: value, path: value.ofType(Quantity).value}
columns:
  - name: patient_key
    kind: patient_key
    source: patient.id
  - name: gender
    kind: categorical
    source: patient.gender
    levels: [male, female]
  - name: birth
    kind: date
    source: patient.birth
    since: {date: "1900-01-01"}
    unit: days
    export: false
  - name: weight
    kind: numeric
    source: obs.value
    aggregate: last
    order_by: obs.when
    unit: kg
    scale: 1
    min: 1
    max: 400
"""


def test_shipped_mappings_load() -> None:
    pilot = load_mapping(MAPPINGS / "pilot_adrenal.yaml")
    assert pilot.anchor.name == "patient"
    assert pilot.patient_key.export is False
    age = pilot.column("age")
    assert isinstance(age.rule, DateRule) and age.rule.unit is DateUnit.YEARS
    assert pilot.column("local_control").missing is Missing.INDICATOR
    phame = load_mapping(MAPPINGS / "phame.yaml")
    group = phame.column("age_group").rule
    assert isinstance(group, CategoricalRule) and group.bins is not None
    assert phame.column("diabetes").aggregate is Aggregate.ANY


def test_schema_is_valid_draft_2020_12() -> None:
    jsonschema.Draft202012Validator.check_schema(mapping_schema())
    assert json.loads((Path(__file__).resolve().parents[3] / "dic_connector" / "mapping"
                       / "mapping.schema.json").read_text())["$schema"].endswith("2020-12/schema")


def test_base_is_valid() -> None:
    mapping = loads_mapping(BASE, "tiny.yaml")
    assert [c.name for c in mapping.columns] == ["patient_key", "gender", "birth", "weight"]
    assert mapping.column("gender").kind is ColumnKind.CATEGORICAL


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(("old", "new", "needle", "rule"), [
    # schema: unknown kind
    ("    kind: numeric\n", "    kind: decimal\n", "kind: decimal", "schema rule 'enum'"),
    # schema: numeric without unit
    ("    unit: kg\n", "", "name: weight", "'unit' is a required property"),
    # schema: negative scale
    ("    scale: 1\n", "    scale: -1\n", "scale: -1", "schema rule 'minimum'"),
    # schema: property of another kind
    ("    levels: [male, female]\n", "    levels: [male, female]\n    scale: 2\n",
     "scale: 2", "'scale' was unexpected"),
    # schema: unknown top-level key
    ("name: tiny\n", "name: tiny\ncolour: blue\n", "colour: blue", "'colour' was unexpected"),
    # cross-reference: unknown view
    ("    source: obs.value\n", "    source: lab.value\n", "source: lab.value",
     "unknown view 'lab'"),
    # cross-reference: unknown column of a view
    ("    source: obs.value\n", "    source: obs.amount\n", "source: obs.amount",
     "view 'obs' has no column 'amount'"),
    # categorical: other not a level
    ("    levels: [male, female]\n", "    levels: [male, female]\n    other: diverse\n",
     "other: diverse", "the 'other' level must be one of 'levels'"),
    # first/last need order_by
    ("    order_by: obs.when\n", "", "aggregate: last", "'order_by' is required"),
    # aggregate not fitting the kind
    ("    aggregate: last\n    order_by: obs.when\n", "    aggregate: any\n", "aggregate: any",
     "aggregate 'any' is not allowed for kind 'numeric'"),
    # min above max
    ("    min: 1\n", "    min: 500\n", "min: 500", "min must not exceed max"),
    # Patient key path
    ("{name: id, path: getResourceKey()}", "{name: id, path: id}", "key: id",
     "must be 'getResourceKey()'"),
    # another view's key is not a reference key
    ("{name: patient, path: subject.getReferenceKey(Patient)}",
     "{name: patient, path: subject.reference}", "key: patient", "getReferenceKey(Patient)"),
    # patient_key may not be exported
    ("    source: patient.id\n", "    source: patient.id\n    export: true\n", "export: true",
     "never leaves the connector"),
    # duplicate YAML key
    ("    unit: kg\n", "    unit: kg\n    unit: g\n", "unit: g", "duplicate key"),
    # bad ViewDefinition, found by the engine, located inside the view
    ("{name: gender, path: gender}", "{name: 'gen der', path: gender}", "gen der",
     "invalid ViewDefinition"),
    # not a calendar date
    ('since: {date: "1900-01-01"}', 'since: {date: "1900-02-30"}', "1900-02-30",
     "not a calendar date"),
])
def test_invalid_mapping_names_file_line_and_rule(old: str, new: str, needle: str,
                                                  rule: str) -> None:
    assert old in BASE
    text = BASE.replace(old, new, 1)
    with pytest.raises(MappingFileError) as caught:
        loads_mapping(text, "broken.yaml")
    message = str(caught.value)
    assert message.startswith(f"broken.yaml:{line_of(text, needle)}: $"), message
    assert rule in message, message


def test_yaml_syntax_error_names_line() -> None:
    text = BASE.replace("    levels: [male, female]\n", "    levels: [male, female\n")
    with pytest.raises(MappingFileError, match=r"^broken\.yaml:\d+: \$: not valid YAML"):
        loads_mapping(text, "broken.yaml")


def test_origin_must_be_declared_earlier() -> None:
    text = BASE + """\
  - name: age
    kind: date
    source: patient.birth
    until: {column: later}
    unit: years
"""
    with pytest.raises(MappingFileError, match="origin 'later' must be a date column") as e:
        loads_mapping(text, "broken.yaml")
    assert f"broken.yaml:{line_of(text, 'until: {column: later}')}:" in str(e.value)


def test_bins_need_one_level_more_than_edges() -> None:
    text = BASE + """\
  - name: weight_class
    kind: categorical
    bins: {column: weight, edges: [50, 100]}
    levels: [light, heavy]
"""
    with pytest.raises(MappingFileError, match=r"2 bin edges need 3 levels"):
        loads_mapping(text, "broken.yaml")


def test_missing_file_is_a_mapping_file_error(tmp_path: Path) -> None:
    with pytest.raises(MappingFileError, match=r"nope\.yaml:1: \$: cannot read"):
        load_mapping(tmp_path / "nope.yaml")


SQL = """\
format: dic-cohort/1
name: tiny_sql
query:
  sql: "SELECT pid, sex, weight_kg FROM cohort WHERE site = :site"
  key: pid
  parameters: {site: munich}
columns:
  - {name: patient_key, kind: patient_key, source: pid}
  - {name: sex, kind: categorical, source: sex, levels: [male, female]}
  - {name: weight, kind: numeric, source: weight_kg, unit: kg, scale: 1}
"""


def test_sql_variant_declares_query_and_typed_columns() -> None:
    mapping = loads_mapping(SQL, "sql.yaml")
    assert mapping.query is not None and mapping.query.parameters == {"site": "munich"}
    assert mapping.anchor.name == QUERY_VIEW
    rows = [{"pid": "a", "sex": "male", "weight_kg": 70.5},
            {"pid": "b", "sex": "female", "weight_kg": 61}]
    table = assemble_rows(mapping, {QUERY_VIEW: rows})
    assert [r["weight"] for r in table.rows] == [70.5, 61]


def test_sql_variant_rejects_views_and_query_together() -> None:
    text = SQL + BASE[BASE.index("views:"):BASE.index("columns:")]
    with pytest.raises(MappingFileError, match="schema rule 'oneOf'"):
        loads_mapping(text, "both.yaml")


def test_join_and_aggregation_on_hand_built_rows() -> None:
    mapping = loads_mapping(BASE, "tiny.yaml")
    table = assemble_rows(mapping, {
        "patient": [{"id": "p1", "gender": "male", "birth": "1950-01-01"},
                    {"id": "p2", "gender": "female", "birth": "1960-01-01"}],
        "obs": [{"patient": "p1", "when": "2020-01-01", "value": 80},
                {"patient": "p1", "when": "2021-01-01", "value": 82.5},
                {"patient": "p1", "when": None, "value": 99},
                {"patient": "zz", "when": "2021-01-01", "value": 70}],
    })
    assert table.orphan_rows == 1
    assert [r["weight"] for r in table.rows] == [82.5, None]
    twice = assemble_rows(mapping, {
        "patient": [{"id": "p1", "gender": "male", "birth": "1950-01-01"},
                    {"id": "p1", "gender": "female", "birth": "1950-01-01"}], "obs": []})
    assert len(twice.rows) == 1
    assert isinstance(twice.rows[0]["gender"], InvalidValue)
    assert twice.rows[0]["gender"].value_class == "multiple values"


def test_sql_mapping_is_not_run_over_fhir_resources() -> None:
    from dic_connector.errors import MappingError
    from dic_connector.mapping.assemble import build_cohort

    with pytest.raises(MappingError, match="SQL mapping"):
        build_cohort(loads_mapping(SQL, "sql.yaml"), [])


def test_unquoted_dates_stay_strings_and_empty_file_fails() -> None:
    mapping = loads_mapping(BASE.replace('since: {date: "1900-01-01"}', "since: {date: 1900-01-01}"))
    rule = mapping.column("birth").rule
    assert isinstance(rule, DateRule) and rule.since is not None
    assert str(rule.since.date) == "1900-01-01"
    with pytest.raises(MappingFileError, match=r"^empty\.yaml:1: \$: the file is empty"):
        loads_mapping("", "empty.yaml")
