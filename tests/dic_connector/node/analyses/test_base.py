"""Manifest parsing, parameter validation, columns read, the catalogue, the run template.

``Analysis.run`` is validate -> gate -> compute -> open: a request is validated before
anything is computed, ``compute`` is called only when the query set passed its gate, and a
refused query set is released as ``{"suppressed": true, "reason": ...}``. Every run checks
its transcript against the independent spy (``support.observed``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import jsonschema
import pytest

from dic_connector.errors import AnalysisError, ConfigError, DicError
from dic_connector.node.analyses.base import Analysis, Inputs, column_parameters
from dic_connector.node.analyses.catalog import ANALYSES, catalog, get_analysis
from dic_connector.node.analyses.disclosure import Disclosure, QuerySet, Release, Rules
from dic_connector.node.analyses.manifest import ColumnInfo, parse_manifest
from mpc.session import Session, run_local
from tests.dic_connector.node.analyses.support import (
    Table,
    assert_transcript_matches,
    observed,
    release,
    run,
    spying,
)

TABLE = (Table().numeric("age", [30, None, 50], minimum=0, maximum=120)
         .categorical("gender", ["f", "m"], ["f", "m", "f"])
         .numeric("start", [1, 2, 3], kind="date")
         .categorical("stage", ["I", "II"], ["I", None, "II"])
         .numeric("dead", [0, 1, 0], kind="boolean"))
MANIFEST = parse_manifest(TABLE.entries)


def test_error_hierarchy() -> None:
    assert issubclass(AnalysisError, DicError)


def test_column_info_from_encoder_entries() -> None:
    info = ColumnInfo.from_manifest({"name": "dose", "kind": "numeric", "column": "dose",
                                     "scale": 2, "unit": "Gy"})
    assert info == ColumnInfo("dose", "numeric", "dose", 2, "Gy")
    hot = ColumnInfo.from_manifest({"name": "g=m", "kind": "one_hot", "column": "g",
                                    "scale": 0, "level": "m"})
    assert hot.level == "m" and hot.levels == ()
    cat = ColumnInfo.from_manifest({"name": "g", "kind": "categorical", "column": "g",
                                    "scale": 0, "levels": ["f", "m"]})
    assert cat.levels == ("f", "m")
    bounded = ColumnInfo("x", "numeric", "x", scale=2, minimum=-0.015, maximum=1.005)
    assert bounded.encoded_bounds() == (-2, 101)  # widened outwards, decimal exact
    assert ColumnInfo("x", "numeric", "x").encoded_bounds() == (None, None)


@pytest.mark.parametrize("entry, message", [
    ("x", "must be an object"),
    ({"kind": "numeric"}, "no 'name'"),
    ({"name": "x", "kind": "text"}, "'kind' must be one of"),
    ({"name": "x", "kind": "numeric", "scale": -1}, "'scale'"),
    ({"name": "x", "kind": "numeric", "scale": True}, "'scale'"),
    ({"name": "x", "kind": "categorical", "levels": "ab"}, "'levels'"),
    ({"name": "x", "kind": "categorical", "levels": ["a", "a"]}, "distinct"),
    ({"name": "x", "kind": "numeric", "unit": 3}, "'unit'"),
    ({"name": "x", "kind": "numeric", "minimum": "0"}, "'minimum'"),
    ({"name": "x", "kind": "numeric", "minimum": 5, "maximum": 1}, "above"),
])
def test_bad_manifest_entries(entry: Any, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        ColumnInfo.from_manifest(entry)


def test_duplicate_manifest_column() -> None:
    entry = {"name": "x", "kind": "numeric", "column": "x", "scale": 0}
    with pytest.raises(AnalysisError, match="twice"):
        parse_manifest([entry, entry])


def test_inputs_row_count_and_share_checks() -> None:
    inputs = TABLE.inputs(segments=(("a", 1), ("b", 2)))[0]
    assert inputs.row_count == 3
    assert inputs.share("age").shape == (3,)
    with pytest.raises(AnalysisError, match="not loaded"):
        inputs.share("nope")
    wrong = Inputs(inputs.columns, inputs.manifest, (("a", 4),))
    with pytest.raises(AnalysisError, match="hold 4 rows"):
        wrong.share("age")


@pytest.mark.parametrize("name, parameters, message", [
    ("count", {"colum": "age"}, "unknown parameter.*'colum'.*expected column"),
    ("count", [], "must be a JSON object"),
    ("count", {"column": 3}, "parameter 'column'.*not of type 'string'"),
    ("count", {"column": ""}, "parameter 'column'"),
    ("count", {"column": "weight"}, "unknown column 'weight'.*age, dead, gender, stage, start"),
    ("count", {"column": "gender=f"}, "belongs to typed column 'gender'"),
    ("mean", {}, "'column' is a required property"),
    ("mean", {"column": "gender"}, "'gender' is categorical; expected a boolean or date or "
     "numeric"),
    ("summary", {"column": "dead"}, "'dead' is boolean"),
    ("median", {"column": "stage"}, "expected a date or numeric"),
    ("frequency", {"column": "age"}, "'age' is numeric; expected a boolean or categorical"),
    ("frequency", {"column": "age__present"}, "belongs to typed column 'age'"),
    ("frequency", {"column": "gender", "by": "x"}, "unknown parameter"),
])
def test_validate_names_the_parameter(name: str, parameters: Any, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        get_analysis(name).validate(parameters, MANIFEST)


def test_validate_accepts_and_run_validates_first() -> None:
    for name, params in (("count", {}), ("count", {"column": "stage"}),
                         ("mean", {"column": "start"}), ("median", {"column": "age"}),
                         ("frequency", {"column": "gender"})):
        get_analysis(name).validate(params, MANIFEST)
    with pytest.raises(AnalysisError, match="unknown column"):
        run(get_analysis("mean"), TABLE, {"column": "weight"}, 5)
    with pytest.raises(ConfigError):
        run(get_analysis("count"), TABLE, {}, 0)


def test_categorical_without_its_one_hot_columns() -> None:
    manifest = parse_manifest([{"name": "g", "kind": "categorical", "column": "g",
                                "scale": 0, "levels": ["a", "b"]},
                               {"name": "g=a", "kind": "one_hot", "column": "g", "level": "a"}])
    with pytest.raises(AnalysisError, match="lacks its one-hot column 'g=b'"):
        get_analysis("frequency").validate({"column": "g"}, manifest)


def test_columns_with_and_without_manifest() -> None:
    assert get_analysis("count").columns({}) == []
    assert get_analysis("count").columns({}, MANIFEST) == []
    assert get_analysis("count").columns({"column": "age"}) == ["age"]
    assert get_analysis("count").columns({"column": "age"}, MANIFEST) == ["age__present"]
    assert get_analysis("mean").columns({"column": "age"}, MANIFEST) == ["age", "age__present"]
    assert get_analysis("mean").columns({"column": "start"}, MANIFEST) == ["start"]
    assert get_analysis("median").columns({"column": "age"}) == ["age"]
    assert get_analysis("frequency").columns({"column": "stage"}, MANIFEST) == [
        "stage=I", "stage=II", "stage__present"]
    with pytest.raises(AnalysisError):
        get_analysis("frequency").columns({"column": "age"}, MANIFEST)


def test_catalog_and_lookup() -> None:
    analyses = catalog()
    assert sorted(analyses) == ["chi_square", "contingency", "correlation", "count",
                                "cox_regression", "fisher",
                                "frequency", "histogram", "linear_regression",
                                "logistic_regression", "logrank", "mean", "median",
                                "prevalence", "quantiles", "summary", "survival", "t_test"]
    assert catalog() is not analyses and catalog()["count"] is not analyses["count"]
    for name, analysis in analyses.items():
        assert isinstance(analysis, Analysis)
        assert analysis.name == name
        assert analysis.version == ("2" if name in ("count", "survival") else "1")
        assert analysis.summary and "researcher" in analysis.discloses
        assert "k" in analysis.discloses and "three nodes" in analysis.discloses
        jsonschema.Draft202012Validator.check_schema(analysis.parameters_schema)
        described = analysis.describe()
        assert json.loads(json.dumps(described)) == described
        assert type(get_analysis(name, analysis.version)) is type(analysis)
    assert len({(c.name, c.version) for c in ANALYSES}) == len(ANALYSES)
    with pytest.raises(AnalysisError, match=r"unknown analysis 'variance'.*count v1"):
        get_analysis("variance")
    with pytest.raises(AnalysisError, match="version '3'"):
        get_analysis("count", "3")
    assert get_analysis("count").version == "1"  # a request pinned to v1 keeps v1


def test_results_and_transcripts_are_json_safe() -> None:
    table = Table().numeric("x", [1, 2, 3, 4, 5], scale=1).categorical("g", ["a"], ["a"] * 5)
    for name, params in (("count", {}), ("mean", {"column": "x"}),
                         ("median", {"column": "x"}), ("frequency", {"column": "g"})):
        for k in (1, 100):
            got = release(get_analysis(name), table, params, k)
            out = got.as_result()
            assert json.loads(json.dumps(out, allow_nan=False)) == out
            assert out["disclosure"] == Rules.of(k).as_json()
            assert got.aggregates.get("suppressed", False) is (k == 100)
            entries = [o.as_json() for o in got.transcript]
            assert json.loads(json.dumps(entries)) == entries


def test_run_is_abstract() -> None:
    class Incomplete(Analysis):
        name = "x"

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]


class Probe(Analysis):
    """Records whether compute ran, and what it got."""

    name = "probe"
    version = "1"
    summary = "a probe of the run template"
    discloses = "n, to the three nodes"
    parameters_schema = column_parameters("any typed column")
    computed: list[QuerySet]

    def __init__(self) -> None:
        self.computed = []

    async def compute(self, d: Disclosure, inputs: Inputs, parameters: dict[str, Any],
                      query: QuerySet) -> dict[str, Any]:
        self.computed.append(query)
        return {"n": await d.open_one("n", inputs.share("age__present").sum().reshape(1),
                                      query.gate_required())}


@pytest.mark.parametrize("k, released", [(1, True), (2, False), (3, False)])
def test_run_computes_only_when_the_query_set_passes(k: int, released: bool) -> None:
    """age has 2 present values and 1 missing: k = 2 is refused by the pooled size (and the
    complement), k = 1 releases n."""
    probe = Probe()
    got, seen = observed(probe, TABLE, {"column": "age"}, Rules(k, 1))
    assert seen.bits == [[0, int(k > 2), int(k > 1)]]
    if released:
        assert got.aggregates == {"n": 2} and len(probe.computed) == 3
        assert all(q.refusal is None for q in probe.computed)
    else:
        assert probe.computed == [] and got.aggregates["suppressed"] is True
        assert set(got.aggregates) == {"suppressed", "reason"}


def test_run_validates_before_anything_is_computed() -> None:
    probe = Probe()
    with spying() as seen, pytest.raises(AnalysisError, match="unknown column"):
        run(probe, TABLE, {"column": "weight"}, 1)
    assert probe.computed == [] and seen.openings == []


def test_only_frequency_leaves_the_complement_to_compute() -> None:
    assert {a.name: a.complement_rule for a in ANALYSES} == {
        "count": True, "mean": True, "median": True, "frequency": False, "summary": True,
        "quantiles": True, "survival": True, "logrank": True, "contingency": False,
        "fisher": False, "chi_square": False, "t_test": True, "correlation": True,
        "linear_regression": True, "logistic_regression": True, "cox_regression": True,
        "histogram": True, "prevalence": False}


@pytest.mark.parametrize("name, parameters", [
    ("count", {}), ("count", {"column": "age"}), ("count", {"column": "gender"}),
    ("mean", {"column": "age"}), ("mean", {"column": "start"}),
    ("median", {"column": "age"}), ("frequency", {"column": "stage"}),
    ("frequency", {"column": "gender"}),
    ("contingency", {"row": "gender", "col": "stage"}),
    ("contingency", {"row": "stage", "col": {"filter": {"op": ">", "column": "age",
                                                        "value": 40}}}),
    ("t_test", {"column": "start", "by": "gender"}),
    ("t_test", {"column": "start", "groups": [
        {"label": "a", "filter": {"op": "<", "column": "age", "value": 40}},
        {"label": "b", "filter": {"op": ">=", "column": "age", "value": 40}}]}),
    ("correlation", {"columns": ["start", "age"],
                     "filter": {"op": "==", "column": "stage", "value": "II"}})])
def test_run_needs_only_the_columns_it_declares(name: str, parameters: dict[str, Any]) -> None:
    """The node loads exactly ``columns(parameters, manifest)``: that must be enough."""
    analysis = get_analysis(name)
    wanted = analysis.columns(parameters, MANIFEST)
    narrow = Table(entries=TABLE.entries,
                   values={c: v for c, v in TABLE.values.items() if c in wanted})
    narrow_inputs = [Inputs(i.columns, MANIFEST, i.segments)
                     for i in narrow.inputs(segments=(("s", 3),))]
    assert all(set(i.columns) == set(wanted) for i in narrow_inputs)

    async def program(s: Session, inputs: Inputs) -> Release:
        return await analysis.run(s, inputs, parameters, Rules.of(1))

    with spying() as seen:
        results = asyncio.run(run_local(program, narrow_inputs))
    assert results[0] == results[1] == results[2]
    assert_transcript_matches(results[0].transcript, seen)
    wide = release(analysis, TABLE, parameters, 1, segments=(("s", 3),))
    assert results[0] == wide and "suppressed" not in wide.aggregates
