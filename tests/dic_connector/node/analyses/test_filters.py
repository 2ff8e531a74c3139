"""Filters: parsing against the manifest, evaluation under MPC against a plaintext
evaluator, and the recipes over filtered query sets on three loopback parties.

The plaintext evaluator :func:`holds` is written from the filter's stated semantics (a
missing value matches no comparison; ``!`` complements over all rows), not from the
implementation; numeric results are compared with numpy.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import jsonschema
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.catalog import ANALYSES, get_analysis
from dic_connector.node.analyses.count import Count
from dic_connector.node.analyses.disclosure import Rules
from dic_connector.node.analyses.filters import (
    FILTER_DEFS,
    MAX_DEPTH,
    evaluate,
    parse_filter,
)
from dic_connector.node.analyses.frequency import Frequency
from dic_connector.node.analyses.manifest import parse_manifest
from mpc.session import Session, run_local
from mpc.sharing import AShare, reconstruct
from tests.dic_connector.node.analyses import reference
from tests.dic_connector.node.analyses.support import (
    Case,
    Segments,
    Table,
    cases,
    observed,
    run,
    spying,
)
from tests.dic_connector.node.analyses.test_ledger import Nodes

ORIGIN = "2020-01-01"


def table() -> Table:
    """Ten rows: numeric (scale 1, declared range), a categorical, a boolean and a date,
    each with missing values."""
    return (Table()
            .numeric("bed", [805, 600, None, 800, 801, -50, 0, None, 1200, 799], scale=1,
                     minimum=-10, maximum=120)
            .categorical("ecog", ["0", "1", "2"], ["0", "1", "2", None, "2", "0", "1", "1",
                                                    None, "2"])
            .boolean("cr", [True, False, None, True, True, False, True, None, False, True])
            .numeric("start", [0, 31, 366, None, -1, 400, 59, 60, None, 10], kind="date",
                     origin=ORIGIN))


def plain(t: Table, name: str) -> list[Any]:
    """The column as its plaintext values (None: missing): numbers in their unit, levels,
    booleans, dates as ISO dates."""
    entries = {e["name"]: e for e in t.entries}
    entry = entries[name]
    raw = t.values[name]
    flag = t.values.get(f"{name}__present")
    present = [True] * len(raw) if flag is None else [bool(v) for v in flag]
    out: list[Any] = []
    for v, p in zip(raw.tolist(), present, strict=True):
        if not p:
            out.append(None)
        elif entry["kind"] == "categorical":
            out.append(entry["levels"][v])
        elif entry["kind"] == "boolean":
            out.append(bool(v))
        elif entry["kind"] == "date" and "origin" in entry:
            out.append(dt.date.fromisoformat(entry["origin"]) + dt.timedelta(days=v))
        else:
            out.append(Fraction(v, 10 ** entry["scale"]))
    return out


def _days(value: Any) -> Any:
    """A date as days since ORIGIN (the unit of the test's date column)."""
    if isinstance(value, dt.date):
        return Fraction((value - dt.date.fromisoformat(ORIGIN)).days)
    if isinstance(value, str):
        return _days(dt.date.fromisoformat(value))
    return Fraction(str(value))


def _constant(value: Any, like: Any) -> Any:
    if isinstance(like, dt.date):
        return _days(value)
    if isinstance(like, Fraction) and not isinstance(value, bool):
        return Fraction(str(value))
    return value


def holds(node: dict[str, Any], row: dict[str, Any]) -> bool:
    """The filter on one plaintext row, from its stated semantics."""
    op = node["op"]
    if op == "&":
        return all(holds(a, row) for a in node["args"])
    if op == "|":
        return any(holds(a, row) for a in node["args"])
    if op == "!":
        return not holds(node["arg"], row)
    v = row[node["column"]]
    v = _days(v) if isinstance(v, dt.date) else v
    if op == "is_present":
        return v is not None
    if v is None:
        return False
    like = row[node["column"]]
    if op == "in":
        return v in [_constant(c, like) for c in node["values"]]
    c = _constant(node["value"], like)
    return {"==": v == c, "!=": v != c, "<": v < c, "<=": v <= c, ">": v > c,
            ">=": v >= c}[op]


def expected_rows(t: Table, node: dict[str, Any]) -> list[bool]:
    columns = {e["column"] for e in t.entries}
    values = {c: plain(t, c) for c in columns}
    return [holds(node, {c: values[c][i] for c in columns}) for i in range(t.rows)]


def evaluated(t: Table, node: dict[str, Any]) -> list[bool]:
    """The filter evaluated under MPC on three loopback parties, reconstructed."""
    manifest = parse_manifest(t.entries)
    f = parse_filter(node, manifest)

    async def program(s: Session, inputs: Inputs) -> AShare:
        return await evaluate(s, f, inputs.share, inputs.row_count)

    with spying() as seen:
        views = asyncio.run(run_local(program, t.inputs()))
    assert seen.openings == []  # a filter opens nothing
    out = reconstruct(*views).astype(np.int64)
    assert set(out.tolist()) <= {0, 1}
    return [bool(v) for v in out]


# -- evaluation ----------------------------------------------------------------------------

LEAVES = [
    {"op": ">=", "column": "bed", "value": 80},
    {"op": ">", "column": "bed", "value": 80},
    {"op": "<", "column": "bed", "value": 80},
    {"op": "<=", "column": "bed", "value": 80.05},
    {"op": "<=", "column": "bed", "value": -5},
    {"op": ">", "column": "bed", "value": 0},
    {"op": "==", "column": "bed", "value": 80},
    {"op": "!=", "column": "bed", "value": 0},
    {"op": "==", "column": "bed", "value": 120},
    {"op": "in", "column": "bed", "values": [0, 80.1, -5, 79.9]},
    {"op": "==", "column": "ecog", "value": "2"},
    {"op": "!=", "column": "ecog", "value": "2"},
    {"op": "in", "column": "ecog", "values": ["0", "1"]},
    {"op": "==", "column": "cr", "value": True},
    {"op": "==", "column": "cr", "value": False},
    {"op": "!=", "column": "cr", "value": True},
    {"op": "<", "column": "start", "value": "2021-01-01"},
    {"op": ">=", "column": "start", "value": 0},
    {"op": "<", "column": "start", "value": -0.5},
    {"op": "==", "column": "start", "value": "2020-03-01"},
    {"op": "in", "column": "start", "values": ["2020-01-01", 31]},
    {"op": "is_present", "column": "ecog"},
    {"op": "is_present", "column": "cr"},
]


@pytest.mark.parametrize("node", LEAVES, ids=lambda n: f"{n['column']}{n['op']}")
def test_every_operator_matches_the_plaintext(node: dict[str, Any]) -> None:
    t = table()
    assert evaluated(t, node) == expected_rows(t, node)


def test_nesting_and_missing_values() -> None:
    t = table()
    nested = {"op": "|", "args": [
        {"op": "&", "args": [{"op": ">=", "column": "bed", "value": 80},
                             {"op": "==", "column": "cr", "value": True},
                             {"op": "!", "arg": {"op": "==", "column": "ecog", "value": "0"}}]},
        {"op": "!", "arg": {"op": "is_present", "column": "bed"}},
        {"op": "in", "column": "ecog", "values": ["2"]}]}
    got = evaluated(t, nested)
    assert got == expected_rows(t, nested)
    assert got == [False, False, True, True, True, False, False, True, False, True]
    # a missing value never matches, != included; ! complements over all rows
    missing = [v is None for v in plain(t, "bed")]
    for node in ({"op": "!=", "column": "bed", "value": 1}, {"op": "<", "column": "bed",
                                                              "value": 100}):
        assert not any(m and h for m, h in zip(missing, evaluated(t, node), strict=True))
        inverse = evaluated(t, {"op": "!", "arg": node})
        assert all(inverse[i] for i, m in enumerate(missing) if m)


def test_without_a_declared_range_the_comparison_is_exact_over_64_bits() -> None:
    """Values near +-2^63 and constants of both signs: the sign of x joins the circuit."""
    big = [-(1 << 63), (1 << 63) - 1, -(1 << 62), (1 << 62), 0, -1, 1, 5, -5]
    t = Table().numeric("x", big)
    for c in (0, 3, -3, (1 << 61), -(1 << 61)):
        for op in ("<", ">="):
            node = {"op": op, "column": "x", "value": c}
            want = [(v < c) == (op == "<") for v in big]
            assert evaluated(t, node) == want, (op, c)


EDGE = st.sampled_from([0, 1, -1, -100, 1200, -99, 1199]) | st.integers(-100, 1200)


@st.composite
def filters(draw: st.DrawFn, depth: int = 3) -> dict[str, Any]:
    """Random trees over x (scale 1, range [-10, 120]) and g, constants at the edges."""
    if depth > 1 and draw(st.booleans()):
        op = draw(st.sampled_from(["&", "|", "!"]))
        if op == "!":
            return {"op": "!", "arg": draw(filters(depth=depth - 1))}
        return {"op": op, "args": draw(st.lists(filters(depth=depth - 1), min_size=2,
                                                max_size=3))}
    kind = draw(st.sampled_from(["order", "eq", "in", "level", "present"]))
    if kind == "order":
        return {"op": draw(st.sampled_from(["<", "<=", ">", ">="])), "column": "x",
                "value": draw(st.sampled_from([-10, 0, 120, 12.3, -0.05, 119.95]) |
                              st.integers(-10, 120))}
    if kind == "eq":
        return {"op": draw(st.sampled_from(["==", "!="])), "column": "x",
                "value": draw(st.sampled_from([-10, 0, 120, -0.1, 5.5]))}
    if kind == "in":
        return {"op": "in", "column": "x",
                "values": draw(st.lists(st.sampled_from([-10, 0, 120, -0.1, 5.5]), min_size=1,
                                        max_size=3))}
    if kind == "level":
        return {"op": draw(st.sampled_from(["==", "!="])), "column": "g",
                "value": draw(st.sampled_from(["a", "b"]))}
    return {"op": "is_present", "column": draw(st.sampled_from(["x", "g"]))}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.none() | EDGE, min_size=1, max_size=8), filters(),
       st.data())
def test_property_filter_matches_numpy(values: list[int | None], node: dict[str, Any],
                                       data: st.DataObject) -> None:
    """Filter evaluation under MPC against numpy over edge values (0, negatives, the declared
    range's boundaries, constants between fixed-point steps)."""
    levels = data.draw(st.lists(st.none() | st.sampled_from(["a", "b"]), min_size=len(values),
                                max_size=len(values)))
    t = (Table().numeric("x", values, scale=1, minimum=-10, maximum=120, present=True)
         .categorical("g", ["a", "b"], levels, present=True))
    assert evaluated(t, node) == _numpy_rows(node, values, levels).tolist()


def _numpy_rows(node: dict[str, Any], x: Sequence[int | None], g: Sequence[str | None]
                ) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """The filter in numpy: x encoded at scale 1 (x / 10 in its unit)."""
    op = node["op"]
    if op in ("&", "|"):
        parts = [_numpy_rows(a, x, g) for a in node["args"]]
        return np.logical_and.reduce(parts) if op == "&" else np.logical_or.reduce(parts)
    if op == "!":
        return ~_numpy_rows(node["arg"], x, g)
    if node["column"] == "g":
        present = np.array([v is not None for v in g])
        if op == "is_present":
            return present
        eq = np.array([v == node["value"] for v in g])
        return eq if op == "==" else present & ~eq
    present = np.array([v is not None for v in x])
    if op == "is_present":
        return present
    value = np.array([0 if v is None else v for v in x], dtype=np.float64) / 10
    if op == "in":
        hit = np.isclose(value[:, None], np.array(node["values"], dtype=np.float64)[None, :],
                         rtol=0, atol=1e-9).any(axis=1)
        return present & hit
    c = float(node["value"])
    compared = {"==": np.isclose(value, c, rtol=0, atol=1e-9),
                "!=": ~np.isclose(value, c, rtol=0, atol=1e-9), "<": value < c - 1e-9,
                "<=": value <= c + 1e-9, ">": value > c + 1e-9, ">=": value >= c - 1e-9}[op]
    return present & compared


def test_a_decimal_string_is_the_number_it_writes() -> None:
    """Signed requests carry no floats (canonical JSON), so a researcher writes 80.05 as
    "80.05"; the filter is then the same as with the number."""
    t = table()
    for text, number in (("80", 80), ("80.0", 80), ("-5", -5), ("79.9", 79.9)):
        as_text = run(get_analysis("count"), t, {"filter": {"op": ">=", "column": "bed",
                                                            "value": text}}, Rules(1, 1))
        as_number = run(get_analysis("count"), t, {"filter": {"op": ">=", "column": "bed",
                                                              "value": number}}, Rules(1, 1))
        assert as_text == as_number, text
    expected = sum(1 for v in [805, 600, None, 800, 801, -50, 0, None, 1200, 799]
                   if v is not None and v >= 799)
    assert run(get_analysis("count"), t, {"filter": {"op": ">=", "column": "bed",
                                                     "value": "79.9"}}, Rules(1, 1))[
        "n"] == expected


# -- validation ----------------------------------------------------------------------------


def _tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"op": "is_present", "column": "bed"}
    for _ in range(depth - 1):
        node = {"op": "!", "arg": node}
    return node


@pytest.mark.parametrize("node, where, what", [
    ({"op": ">=", "column": "bedx", "value": 80}, "filter.column", "unknown column 'bedx'"),
    ({"op": "&", "args": [{"op": "is_present", "column": "bed"},
                          {"op": "<", "column": "ecog", "value": "1"}]},
     "filter.args[1].value", "categorical; it has no order"),
    ({"op": "==", "column": "ecog", "value": "5"}, "filter.value", "'5' is not a level"),
    ({"op": "in", "column": "ecog", "values": ["0", "9"]}, "filter.values[1]",
     "'9' is not a level"),
    ({"op": ">", "column": "bed", "value": 500}, "filter.value",
     "outside the declared range [-10, 120]"),
    ({"op": "==", "column": "bed", "value": 80.05}, "filter.value", "more decimals"),
    ({"op": ">", "column": "bed", "value": "eighty"}, "filter.value", "expected a number"),
    ({"op": ">", "column": "bed", "value": "8e1"}, "filter.value", "expected a number"),
    ({"op": "==", "column": "cr", "value": 1}, "filter.value", "boolean"),
    ({"op": "<", "column": "cr", "value": True}, "filter.value", "boolean"),
    ({"op": "in", "column": "cr", "values": ["x"]}, "filter.values", "boolean"),
    ({"op": "<", "column": "start", "value": "2020-13-01"}, "filter.value", "ISO date"),
    ({"op": "!", "arg": {"op": "~", "column": "bed"}}, "filter.arg.op", "unknown operator"),
    ({"op": "&", "args": [{"op": "is_present", "column": "bed"}]}, "filter.args",
     "at least 2"),
    ({"op": "is_present", "column": "bed", "value": 1}, "filter", "unknown key(s) 'value'"),
    ({"op": ">", "column": "bed"}, "filter", "needs 'value'"),
    ({"op": "is_present", "column": "bed=1"}, "filter.column", "unknown column"),
    (_tree(MAX_DEPTH + 1), "filter" + ".arg" * MAX_DEPTH, f"at most {MAX_DEPTH} levels"),
    ({"op": "|", "args": [{"op": "is_present", "column": "bed"}] * 70}, "filter.args[63]",
     "at most 64 nodes"),
    ("bed > 80", "filter", "JSON object"),
])
def test_validation_errors_name_the_place(node: Any, where: str, what: str) -> None:
    manifest = table().inputs()[0].manifest
    with pytest.raises(AnalysisError) as raised:
        get_analysis("count").validate({"filter": node}, manifest)
    message = str(raised.value)
    assert message.startswith(f"count: parameter {where}: "), message
    assert what in message, message


def test_dates_need_a_declared_origin_for_iso_dates() -> None:
    t = Table().numeric("d", [1, 2, 3], kind="date")
    with pytest.raises(AnalysisError, match="does not give as a date"):
        parse_filter({"op": "<", "column": "d", "value": "2020-01-01"},
                     t.inputs()[0].manifest)
    parse_filter({"op": "<", "column": "d", "value": 30}, t.inputs()[0].manifest)


def test_the_schema_accepts_every_valid_filter_and_the_catalogue_shows_it() -> None:
    schema = {"$ref": "#/$defs/filter", "$defs": FILTER_DEFS}
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for node in [*LEAVES, _tree(MAX_DEPTH)]:
        assert not list(validator.iter_errors(node)), node
    for bad in ({"op": "~"}, {"op": "&", "args": []}, {"op": "in", "column": "x",
                                                       "values": []}):
        assert list(validator.iter_errors(bad))
    for cls in ANALYSES:
        described = cls().describe()["parameters_schema"]
        jsonschema.Draft202012Validator.check_schema(described)
        assert described["properties"]["filter"] == {"$ref": "#/$defs/filter"}
        assert described["$defs"] == FILTER_DEFS
        assert "A filter opens nothing itself" in cls.discloses


def test_columns_include_the_filters_matrix_and_typed_columns() -> None:
    manifest = table().inputs()[0].manifest
    mean = get_analysis("mean")
    parameters = {"column": "bed", "filter": {"op": "&", "args": [
        {"op": "==", "column": "ecog", "value": "2"}, {"op": "==", "column": "cr",
                                                       "value": True}]}}
    assert mean.columns(parameters, manifest) == [
        "bed", "bed__present", "ecog=2", "ecog__present", "cr", "cr__present"]
    assert mean.columns(parameters) == ["bed", "ecog", "cr"]
    assert mean.typed_columns(parameters, manifest) == ["bed", "cr", "ecog"]
    count = get_analysis("count")
    only = {"filter": {"op": "is_present", "column": "start"}}
    assert count.columns(only, manifest) == ["start__present"]
    assert count.typed_columns(only, manifest) == ["start"]


# -- recipes over a filtered query set -----------------------------------------------------

COUNT = Count()


def cohort() -> Table:
    """40 rows: dose (declared range), response, a boolean, with missing values."""
    rng = np.random.default_rng(7)
    dose = [None if i % 9 == 4 else int(v) for i, v in enumerate(rng.integers(300, 1000, 40))]
    response = [["CR", "PR", "SD"][int(v)] for v in rng.integers(0, 3, 40)]
    cr = [bool(v) for v in rng.integers(0, 2, 40)]
    return (Table().numeric("dose", dose, scale=1, minimum=0, maximum=150)
            .categorical("resp", ["CR", "PR", "SD"], response)
            .boolean("flag", cr))


HIGH = {"op": ">=", "column": "dose", "value": 60}
SEGMENTS: Segments = (("a", 18), ("b", 22))


def _passes(t: Table, node: dict[str, Any]) -> list[bool]:
    return expected_rows(t, node)


@pytest.mark.parametrize("node", [
    HIGH, {"op": "==", "column": "flag", "value": True},
    {"op": "in", "column": "resp", "values": ["CR", "PR"]},
    {"op": "!", "arg": {"op": "<", "column": "dose", "value": 45}}])
@pytest.mark.parametrize("k", [3, 5])
def test_count_mean_summary_median_over_a_filter(node: dict[str, Any], k: int) -> None:
    t = cohort()
    passes = _passes(t, node)
    dose = [None if v is None else int(v * 10) for v in plain(t, "dose")]
    rules = Rules.of(k)
    kept = [v if p else None for v, p in zip(dose, passes, strict=True)]
    refusal, gate = reference.filtered_gate(dose, passes, SEGMENTS, rules, indicator=True)
    inside = np.array([v for v in kept if v is not None], dtype=np.int64)
    for name in ("count", "mean", "summary", "median"):
        got, seen = observed(get_analysis(name), t, {"column": "dose", "filter": node},
                             rules, SEGMENTS)
        opened = [(o.kind, list(o.values or ())) for o in seen.openings
                  if not o.where.startswith("mpc.protocols.sort.")]
        assert opened[:1] == gate, name  # the filter opened nothing before the gate
        if refusal is not None:
            assert reference.reason_matches(got.aggregates["reason"], refusal, SEGMENTS,
                                            rules), got.aggregates
            assert len(opened) == 1
            continue
        assert got.aggregates["n"] == inside.size
        assert [kind for kind, _ in opened[1:]] == ["values"] * (len(opened) - 1)
        if name == "mean":
            assert got.aggregates["mean"] == pytest.approx(float(np.mean(inside)) / 10)
        if name == "summary":
            assert got.aggregates["sd"] == pytest.approx(float(np.std(inside, ddof=1)) / 10)
        if name == "median":
            assert got.aggregates["median"] == pytest.approx(float(np.median(inside)) / 10)


def test_frequency_over_a_filter_checks_the_complement_per_level() -> None:
    t = cohort()
    node = {"op": "==", "column": "flag", "value": True}
    passes = _passes(t, node)
    response = plain(t, "resp")
    k = 3
    got, _ = observed(get_analysis("frequency"), t, {"column": "resp", "filter": node},
                         Rules.of(k), SEGMENTS)
    filtered = [sum(r == level and p for r, p in zip(response, passes, strict=True))
                for level in ("CR", "PR", "SD")]
    dropped = [sum(r == level for r in response) - f
               for level, f in zip(("CR", "PR", "SD"), filtered, strict=True)]
    shown = got.aggregates["levels"]
    for level, f, r in zip(("CR", "PR", "SD"), filtered, dropped, strict=True):
        if f < k:
            assert shown[level] == f"<{k}"
        elif 1 <= r <= k - 1:
            assert shown[level] == "suppressed"
        elif shown[level] != "suppressed":  # or secondary suppression
            assert shown[level] == f
    names = [o.name for o in got.transcript]
    assert "present rows of each level that fail the filter: 0 or >= 3" in names
    small = Table().categorical("g", ["a", "b"], ["a"] * 8 + ["b"] * 8).boolean(
        "f", [True] * 7 + [False] + [True] * 8)
    out = observed(get_analysis("frequency"), small,
                   {"column": "g", "filter": {"op": "==", "column": "f", "value": True}},
                   Rules(3, 1))[0].aggregates
    assert out["levels"]["a"] == "suppressed"  # 8 - 7 = 1 row of 'a' fails the filter


def test_an_empty_query_set_after_the_filter_is_refused_by_rule() -> None:
    t = cohort()
    nothing = {"op": "&", "args": [HIGH, {"op": "<", "column": "dose", "value": 60}]}
    for name in ("count", "mean", "summary", "median", "frequency"):
        column = "resp" if name == "frequency" else "dose"
        got, seen = observed(get_analysis(name), t, {"column": column, "filter": nothing},
                             Rules(5, 1), SEGMENTS)
        assert got.refused and got.aggregates["reason"] == (
            "site(s) 'a', 'b' contribute fewer than 1 rows (min_subset_size) to the query "
            "set"), (name, got.aggregates)
        assert [o.kind for o in seen.openings] == ["bits"]
    few = {"op": "<", "column": "dose", "value": 40}  # 3 rows
    assert sum(_passes(t, few)) == 3
    got, _ = observed(get_analysis("count"), t, {"filter": few}, Rules(5, 1))
    assert got.aggregates["reason"] == "the query set has fewer than 5 rows (min_cell_count)"


@pytest.mark.parametrize("dropped, refused", [(0, False), (1, True), (4, True), (5, False)])
def test_a_filter_whose_complement_is_below_k_is_refused(dropped: int, refused: bool) -> None:
    """count(x) and count(x, filter) together give the present rows the filter drops."""
    values = [10] * (20 - dropped) + [1] * dropped + [None] * 5
    t = Table().numeric("x", values)
    node = {"op": ">=", "column": "x", "value": 5}
    got, _ = observed(get_analysis("count"), t, {"column": "x", "filter": node}, Rules(5, 1))
    if refused:
        assert got.refused and "rows where 'x' is present fail the filter" in got.aggregates[
            "reason"] and "complement rule" in got.aggregates["reason"]
    else:
        assert got.aggregates == {"n": 20 - dropped}


def test_rows_that_pass_the_filter_but_lack_the_column_are_a_complement() -> None:
    """count(filter) minus count(x, filter) gives the missing values among the filtered rows."""
    t = (Table().numeric("x", [1] * 10 + [None] * 2 + [1] * 8 + [None] * 5)
         .boolean("f", [True] * 12 + [False] * 13))
    node = {"op": "==", "column": "f", "value": True}
    got, _ = observed(get_analysis("count"), t, {"column": "x", "filter": node}, Rules(5, 1))
    assert "rows that pass the filter lack 'x'" in got.aggregates["reason"]


def test_filtered_cells_are_keyed_by_the_filter_on_the_ledger() -> None:
    t = cohort()
    node = {"op": "==", "column": "flag", "value": True}
    got, _ = observed(get_analysis("count"), t, {"column": "dose", "filter": node},
                      Rules(2, 1), SEGMENTS)
    assert got.recorded is None  # unit tests have no contributors
    frequency = get_analysis("frequency")
    manifest = t.inputs()[0].manifest
    key = frequency.cell("resp=CR", {"column": "resp", "filter": node}, manifest)
    assert key == 'resp=CR where {"column":"flag","op":"==","value":true}'
    assert frequency.cell("resp=CR", {"column": "resp"}, manifest) == "resp=CR"


def test_pooled_minus_per_site_with_the_same_filter_is_checked_on_the_ledger() -> None:
    """count(x, f) over B, then over A + B: A's rows outside the filtered query set (10 - 8)
    would follow; the ledger holds the filtered complement under the filter's key."""
    nodes = Nodes()
    f = {"op": "==", "column": "f", "value": True}
    b = Table().numeric("x", [1] * 24).boolean("f", [True] * 19 + [False] * 5)
    assert nodes.run(Count(), b, {"column": "x", "filter": f}, (("B", 24),)) == {"n": 19}
    assert nodes.ledgers[0][0].cells == (
        'x__missing where {"column":"f","op":"==","value":true}',)
    both = Table().numeric("x", [1] * 34).boolean(
        "f", [True] * 8 + [False] * 2 + [True] * 19 + [False] * 5)
    pooled = nodes.run(Count(), both, {"column": "x", "filter": f}, (("A", 10), ("B", 24)))
    assert pooled["suppressed"] and "release ledger" in pooled["reason"]
    assert "'A'" in pooled["reason"]
    # unfiltered, the same releases are other cells: A's 0 missing values are no secret
    assert nodes.run(Count(), both, {"column": "x"}, (("A", 10), ("B", 24))) == {"n": 34}


def test_a_filtered_table_pooled_minus_per_site_is_checked_cell_by_cell() -> None:
    nodes = Nodes()
    f = {"op": "is_present", "column": "g"}
    tm = ["a"] * 12 + ["b"] * 18
    alone = nodes.run(Frequency(), Table().categorical("g", ["a", "b"], tm),
                      {"column": "g", "filter": f}, (("tm", 30),))
    assert alone["levels"] == {"a": 12, "b": 18}
    pooled = nodes.run(Frequency(), Table().categorical("g", ["a", "b"],
                                                        tm + ["a"] * 8 + ["b"] * 2),
                       {"column": "g", "filter": f}, (("tm", 30), ("tr", 10)))
    assert pooled["levels"] == {"a": 20, "b": "suppressed"}  # 20 - 18 = tr's 2


@settings(max_examples=30, deadline=None)
@given(cases(st.integers(-5, 5)), st.integers(-6, 6), st.sampled_from(["<", ">=", "!="]))
def test_filtered_count_and_its_transcript_match_the_reference(case: Case, c: int,
                                                               op: str) -> None:
    """Every bit and value opened, in order: the gate's bits (per site, n, the complements)
    and then n; the filter itself opens nothing."""
    t = Table().numeric("x", case.values, present=case.indicator)
    node = {"op": op, "column": "x", "value": c}
    passes = [v is not None and {"<": v < c, ">=": v >= c, "!=": v != c}[op]
              for v in case.values]
    got, seen = observed(COUNT, t, {"column": "x", "filter": node}, case.rules, case.segments)
    refusal, openings = reference.filtered_gate(case.values, passes, case.segments,
                                                case.rules, case.indicator)
    n = sum(passes)
    expected = reference.Expected(None if refusal else {"n": n}, refusal,
                                  openings + ([] if refusal else [("values", [n])]))
    reference.assert_release(got, seen, expected, case.segments, case.rules)


# -- booleans ------------------------------------------------------------------------------


def test_booleans_count_where_true_proportion_and_table() -> None:
    """Issue 14's newcomer case, scaled down: 30 present, 13 true, 5 missing."""
    values: list[bool | None] = [True] * 13 + [False] * 17 + [None] * 5
    t = Table().boolean("flag", values).numeric("x", list(range(35)))
    rules = Rules(5, 1)
    assert observed(get_analysis("count", "1"), t, {"column": "flag"}, rules)[0] \
        .aggregates == {"n": 30}  # v1: present rows, unchanged
    got, seen = observed(get_analysis("count", "2"), t, {"column": "flag"}, rules)
    assert got.aggregates == {"n": 13}
    assert [o.kind for o in seen.openings] == ["bits", "bits", "values"]
    assert seen.bits[1] == [0, 0, 0]  # site >= m, 13 >= k, 17 false rows 0 or >= k
    mean = observed(get_analysis("mean"), t, {"column": "flag"}, rules)[0].aggregates
    assert mean == {"n": 30, "sum": "13", "mean": 13 / 30, "proportion": 13 / 30}
    table = observed(get_analysis("frequency"), t, {"column": "flag"}, rules)[0].aggregates
    assert table["levels"] == {"false": 17, "true": 13}
    high = {"op": ">=", "column": "x", "value": 10}  # rows 10..34: 3 true, 17 false
    few = observed(get_analysis("count", "2"), t, {"column": "flag", "filter": high},
                   rules)[0]
    assert few.refused and "counting the rows where 'flag' is true" in few.aggregates["reason"]
    almost = [True] * 27 + [False] * 3 + [None] * 5  # 3 false rows: v1 minus v2 gives them
    out = observed(get_analysis("count", "2"), Table().boolean("flag", almost),
                   {"column": "flag"}, rules)[0].aggregates
    assert "where 'flag' is false" in out["reason"] and "complement rule" in out["reason"]
