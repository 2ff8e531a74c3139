"""Cohort mapping files: load, check and describe a typed cohort table.

A mapping file (YAML, format ``dic-cohort/1``, documented in ``mappings/README.md``) declares
*what* a hospital contributes, never *how* to export it (DESIGN.md section 3):

- ``views``: SQL-on-FHIR v2 ViewDefinitions (https://sql-on-fhir.org/ig/latest/), inline.
  Exactly one has ``resource: Patient``; its ``key`` column is ``getResourceKey()`` and it
  defines the rows of the table (one per patient). Every other view's ``key`` column is
  ``getReferenceKey(Patient)`` of a subject/patient reference; its rows join to the patient;
- or ``query``: one SQL text with bound parameters whose ``key`` column is the patient key
  (the SQL source that runs it lives in :mod:`dic_connector.sources`);
- ``columns``: the typed columns (:mod:`dic_connector.mapping.columns`), each from a
  ``view.column`` source with a per-patient ``aggregate`` (``one``, ``first``/``last`` by an
  ``order_by`` column, ``count``, ``any``/``all``, ``min``/``max``).

Checking happens in two passes, both reporting ``file:line: $.json.path: rule``: the JSON
Schema ``mapping.schema.json`` (shapes and enums), then the cross-references the schema
cannot express (names that must exist, declaration order of origins and bins, aggregate vs
kind). Each view is also checked by the ViewDefinition engine (:mod:`dic_connector.sqlonfhir`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

import jsonschema

from dic_connector.errors import MappingError
from dic_connector.mapping.columns import (
    Aggregate,
    Bins,
    BooleanRule,
    CategoricalRule,
    ColumnKind,
    ColumnSpec,
    DateRule,
    DateUnit,
    Missing,
    NumericRule,
    OnInvalid,
    Origin,
    Rule,
    SourceRef,
)
from dic_connector.mapping.yaml_lines import JsonPath, LocatedDocument, load_located, read_located
from dic_connector.sqlonfhir import run_view

FORMAT = "dic-cohort/1"
QUERY_VIEW = "query"  #: the view name of a SQL query's rows


@dataclass(frozen=True)
class ViewSpec:
    """One ViewDefinition of the mapping and the column holding the patient key."""

    name: str
    key: str
    definition: Mapping[str, Any]
    columns: tuple[str, ...]

    @property
    def resource(self) -> str:
        return str(self.definition["resource"])


@dataclass(frozen=True)
class QuerySpec:
    """The SQL variant: one query, its bound parameters and its patient-key column."""

    sql: str
    key: str
    parameters: Mapping[str, Any]
    dialect: str | None = None


@dataclass(frozen=True)
class CohortMapping:
    """A parsed, checked mapping file."""

    name: str
    file: str
    columns: tuple[ColumnSpec, ...]
    views: tuple[ViewSpec, ...] = ()
    query: QuerySpec | None = None
    title: str = ""

    @property
    def anchor(self) -> ViewSpec:
        """The Patient view (or the query) whose rows are the table's rows."""
        return next(v for v in self.views if v.resource == "Patient")

    @property
    def patient_key(self) -> ColumnSpec:
        return next(c for c in self.columns if c.kind is ColumnKind.PATIENT_KEY)

    def column(self, name: str) -> ColumnSpec:
        return next(c for c in self.columns if c.name == name)

    def view(self, name: str) -> ViewSpec:
        return next(v for v in self.views if v.name == name)


@cache
def mapping_schema() -> dict[str, Any]:
    """The JSON Schema shipped as ``mapping.schema.json``."""
    text = importlib_resources.files(__package__).joinpath("mapping.schema.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_mapping(path: str | Path) -> CohortMapping:
    """Read, schema-check and cross-check a mapping file (:class:`MappingFileError`)."""
    return parse_mapping(read_located(path))


def loads_mapping(text: str, file: str = "<string>") -> CohortMapping:
    """As :func:`load_mapping`, from YAML text; ``file`` names it in messages."""
    return parse_mapping(load_located(text, file))


def parse_mapping(doc: LocatedDocument) -> CohortMapping:
    _check_schema(doc)
    data = doc.data
    views = tuple(_view(doc, i, v) for i, v in enumerate(data.get("views", [])))
    query = None
    if "query" in data:
        q = data["query"]
        query = QuerySpec(q["sql"], q["key"], dict(q.get("parameters", {})), q.get("dialect"))
        views = (ViewSpec(QUERY_VIEW, q["key"], {"resource": "Patient"}, ()),)
    _check_views(doc, views, query is not None)
    columns = tuple(_column(doc, i, c) for i, c in enumerate(data["columns"]))
    _check_columns(doc, columns, {v.name: v for v in views}, query is not None)
    return CohortMapping(name=data["name"], file=doc.file, columns=columns, views=views,
                         query=query, title=data.get("title", ""))


_UNEXPECTED = ("unevaluatedProperties", "additionalProperties")


def _check_schema(doc: LocatedDocument) -> None:
    validator = jsonschema.Draft202012Validator(mapping_schema())
    errors = list(validator.iter_errors(doc.data))
    if not errors:
        return
    # A failed `then` leaves its properties unevaluated; the real cause is the other error.
    specific = [e for e in errors if e.validator not in _UNEXPECTED] or errors
    best = jsonschema.exceptions.best_match(specific) or specific[0]
    path: JsonPath = tuple(best.absolute_path)
    if best.validator in _UNEXPECTED:
        named = re.findall(r"'([^']+)'", best.message)
        if named:
            path = (*path, named[0])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise doc.error(path, f"schema rule '{best.validator}': {best.message}{more}")


def _view_columns(select: Any) -> Iterator[tuple[str, str]]:
    """(name, path) of every column a ViewDefinition select tree produces."""
    for item in select or []:
        for col in item.get("column", []):
            yield str(col.get("name")), str(col.get("path", ""))
        yield from _view_columns(item.get("select"))
        union = item.get("unionAll") or []
        yield from _view_columns(union[:1])


def _view(doc: LocatedDocument, i: int, raw: dict[str, Any]) -> ViewSpec:
    definition = raw["view"]
    columns = dict(_view_columns(definition["select"]))
    spec = ViewSpec(raw["name"], raw["key"], definition, tuple(columns))
    where: JsonPath = ("views", i, "key")
    if spec.key not in columns:
        raise doc.error(where, f"key column {spec.key!r} is not a column of view {spec.name!r}")
    path = columns[spec.key].replace(" ", "")
    if spec.resource == "Patient" and path != "getResourceKey()":
        raise doc.error(where, "the Patient view's key column must be 'getResourceKey()'")
    if spec.resource != "Patient" and "getReferenceKey(" not in path:
        raise doc.error(where, "a view's key column must be a getReferenceKey(Patient) path")
    _engine_check(doc, i, definition)
    return spec


def _engine_check(doc: LocatedDocument, i: int, definition: Mapping[str, Any]) -> None:
    """Let the ViewDefinition engine validate the view."""
    view = {"resourceType": "ViewDefinition", "status": "active", **definition}
    try:
        run_view(view, [])
    except MappingError as exc:
        inner: JsonPath = tuple(
            int(index) if index else name
            for name, index in re.findall(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]",
                                          getattr(exc, "path", "$")))
        raise doc.error(("views", i, "view", *inner),
                        f"invalid ViewDefinition (SQL-on-FHIR v2): {exc}") from None


def _check_views(doc: LocatedDocument, views: tuple[ViewSpec, ...], is_query: bool) -> None:
    names: set[str] = set()
    for i, view in enumerate(views):
        if view.name in names:
            raise doc.error(("views", i, "name"), f"view name {view.name!r} is used twice")
        names.add(view.name)
    anchors = [v for v in views if v.resource == "Patient"]
    if not is_query and len(anchors) != 1:
        raise doc.error(("views",), "exactly one view must have resource 'Patient' "
                                    f"(found {len(anchors)})")


def _ref(text: str | None) -> SourceRef | None:
    if text is None:
        return None
    view, _, column = text.rpartition(".")
    return SourceRef(view or QUERY_VIEW, column)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _origin(raw: dict[str, Any] | None) -> Origin | None:
    if raw is None:
        return None
    if "date" in raw:
        return Origin(date=dt.date.fromisoformat(raw["date"]))
    return Origin(column=raw["column"])


def _rule(doc: LocatedDocument, i: int, raw: dict[str, Any]) -> Rule:
    kind = raw["kind"]
    if kind == "numeric":
        return NumericRule(raw["unit"], raw.get("scale", 0), _number(raw.get("min")),
                           _number(raw.get("max")))
    if kind == "categorical":
        bins = raw.get("bins")
        return CategoricalRule(
            tuple(raw["levels"]), raw.get("other"),
            {str(code): level for code, level in raw.get("map", {}).items()},
            Bins(bins["column"], tuple(float(e) for e in bins["edges"])) if bins else None)
    if kind == "boolean":
        return BooleanRule(frozenset(raw.get("codes", ())), tuple(raw.get("prefixes", ())))
    if kind == "date":
        try:
            return DateRule(DateUnit(raw["unit"]), raw.get("scale", 0), _origin(raw.get("since")),
                            _origin(raw.get("until")), _number(raw.get("min")),
                            _number(raw.get("max")))
        except ValueError:
            where = "since" if "since" in raw else "until"
            raise doc.error(("columns", i, where, "date"), "not a calendar date") from None
    return None


def _column(doc: LocatedDocument, i: int, raw: dict[str, Any]) -> ColumnSpec:
    kind = ColumnKind(raw["kind"])
    return ColumnSpec(
        name=raw["name"], kind=kind, source=_ref(raw.get("source")), rule=_rule(doc, i, raw),
        aggregate=Aggregate(raw.get("aggregate", "one")), order_by=_ref(raw.get("order_by")),
        on_invalid=OnInvalid(raw.get("on_invalid", "reject_row")),
        missing=Missing(raw.get("missing", "reject_row")),
        export=bool(raw.get("export", kind is not ColumnKind.PATIENT_KEY)),
        description=raw.get("description", ""),
    )


_AGGREGATE_KINDS = {
    Aggregate.COUNT: {ColumnKind.NUMERIC},
    Aggregate.ANY: {ColumnKind.BOOLEAN},
    Aggregate.ALL: {ColumnKind.BOOLEAN},
    Aggregate.MIN: {ColumnKind.NUMERIC, ColumnKind.DATE},
    Aggregate.MAX: {ColumnKind.NUMERIC, ColumnKind.DATE},
}


def _check_columns(doc: LocatedDocument, columns: tuple[ColumnSpec, ...],
                   views: dict[str, ViewSpec], is_query: bool) -> None:
    earlier: dict[str, ColumnSpec] = {}
    keys = [i for i, c in enumerate(columns) if c.kind is ColumnKind.PATIENT_KEY]
    if len(keys) != 1:
        raise doc.error(("columns",), f"exactly one column of kind 'patient_key' is required "
                                      f"(found {len(keys)})")
    for i, col in enumerate(columns):
        at = ("columns", i)
        if col.name in earlier:
            raise doc.error((*at, "name"), f"column name {col.name!r} is used twice")
        for j, ref in (("source", col.source), ("order_by", col.order_by)):
            if ref is None:
                continue
            if "." not in doc.data["columns"][i][j] and not is_query:
                raise doc.error((*at, j), "a source must be 'view.column'")
            view = views.get(ref.view)
            if view is None:
                raise doc.error((*at, j), f"unknown view {ref.view!r}")
            if view.columns and ref.column not in view.columns:
                raise doc.error((*at, j), f"view {ref.view!r} has no column {ref.column!r}")
        _check_column(doc, at, col, earlier, views)
        earlier[col.name] = col


def _check_column(doc: LocatedDocument, at: JsonPath, col: ColumnSpec,
                  earlier: dict[str, ColumnSpec], views: dict[str, ViewSpec]) -> None:
    rule = col.rule
    binned = isinstance(rule, CategoricalRule) and rule.bins is not None
    if col.source is None and not binned:
        raise doc.error(at, "a 'source' is required (only a categorical with 'bins' has none)")
    if binned and col.source is not None:
        raise doc.error((*at, "source"), "a categorical with 'bins' takes no 'source'")
    if col.kind is ColumnKind.PATIENT_KEY:
        anchor = next(iter(v for v in views.values() if v.resource == "Patient"))
        if col.export:
            raise doc.error((*at, "export"), "the patient_key never leaves the connector")
        if col.source != SourceRef(anchor.name, anchor.key):
            raise doc.error((*at, "source"), f"the patient_key source must be the Patient "
                                             f"view's key '{anchor.name}.{anchor.key}'")
    allowed = _AGGREGATE_KINDS.get(col.aggregate)
    if allowed is not None and col.kind not in allowed:
        raise doc.error((*at, "aggregate"), f"aggregate '{col.aggregate.value}' is not "
                                            f"allowed for kind '{col.kind.value}'")
    ordered = col.aggregate in (Aggregate.FIRST, Aggregate.LAST)
    if ordered != (col.order_by is not None):
        raise doc.error((*at, "order_by" if col.order_by else "aggregate"),
                        "'order_by' is required by first/last and allowed only with them")
    if ordered and col.order_by and col.source and col.order_by.view != col.source.view:
        raise doc.error((*at, "order_by"), "'order_by' must be a column of the source view")
    if (isinstance(rule, NumericRule | DateRule) and rule.minimum is not None
            and rule.maximum is not None and rule.minimum > rule.maximum):
        raise doc.error((*at, "min"), "min must not exceed max")
    if isinstance(rule, CategoricalRule):
        _check_categorical(doc, at, rule, earlier)
    if isinstance(rule, DateRule):
        if rule.unit is not DateUnit.MONTHS and rule.scale:
            raise doc.error((*at, "scale"), "only months may have decimals (scale > 0)")
        origin = rule.since or rule.until
        if origin is not None and origin.column is not None:
            ref = earlier.get(origin.column)
            if ref is None or ref.kind is not ColumnKind.DATE:
                raise doc.error((*at, "since" if rule.since else "until", "column"),
                                f"origin {origin.column!r} must be a date column declared "
                                "earlier")


def _check_categorical(doc: LocatedDocument, at: JsonPath, rule: CategoricalRule,
                       earlier: dict[str, ColumnSpec]) -> None:
    if rule.other is not None and rule.other not in rule.levels:
        raise doc.error((*at, "other"), "the 'other' level must be one of 'levels'")
    for code, level in rule.value_map.items():
        if level not in rule.levels:
            raise doc.error((*at, "map", code), f"maps to {level!r}, which is not a level")
    if rule.bins is not None:
        ref = earlier.get(rule.bins.column)
        if ref is None or ref.kind not in (ColumnKind.NUMERIC, ColumnKind.DATE):
            raise doc.error((*at, "bins", "column"), f"{rule.bins.column!r} must be a numeric "
                                                     "or date column declared earlier")
        edges = rule.bins.edges
        if any(b <= a for a, b in itertools.pairwise(edges)):
            raise doc.error((*at, "bins", "edges"), "edges must increase strictly")
        if len(rule.levels) != len(edges) + 1:
            raise doc.error((*at, "levels"), f"{len(edges)} bin edges need "
                                             f"{len(edges) + 1} levels")
