"""From FHIR resources to one raw row per patient: run the views, join, aggregate.

Each ViewDefinition of a mapping is compiled once by the SQL-on-FHIR v2 engine
(:func:`dic_connector.sqlonfhir.view.compile_view`) and run over the resources of its type.
:class:`CohortBuilder` takes the resources in chunks, as a source streams them: it runs the
views over each chunk and keeps only their rows, so memory follows the flattened view rows,
not the resources (:func:`build_cohort` is the one-chunk case). Those rows are kept compact:
a tuple of only the columns the mapping reads (:func:`view_columns`), the repeated strings of
a column and the patient keys of every view shared (:class:`_Interner`); for the PHAME
mapping about 420 bytes per patient at 10^6 patients (the growth of peak RSS over the pull
in ``benchmarks/pipeline.py``) instead of 1,400 as dicts. The Patient view's rows define the
patients, in source order; every other view's rows are grouped by their
``getReferenceKey(Patient)`` key, which equals the Patient's ``getResourceKey()``
(SQL-on-FHIR v2, "Joining resources"), one view at a time. Rows whose key matches no patient
are dropped and counted (:attr:`AssembledTable.orphan_rows`), never reported one by one. The
result is held by column (:attr:`AssembledTable.columns`), without a dict per patient.

The views are compiled with ``invalid_values``: a cell a view cannot give from the data
(text in its arithmetic, a value not of its declared type) is an
:class:`~dic_connector.mapping.columns.InvalidValue` instead of an error of the whole run.
Per column, the rows of the patient are reduced by the column's aggregate (see
:class:`~dic_connector.mapping.columns.Aggregate`); an InvalidValue among them is the
patient's value. A value that cannot be aggregated, e.g.
two different values where ``one`` is declared, becomes an
:class:`~dic_connector.mapping.columns.InvalidValue` in the row, which
:func:`~dic_connector.encoding.validate.validate_columns` (or ``validate_rows`` for the
table as rows) turns into a rejected row or a failed
dataset according to the column's ``on_invalid`` policy. ``first``/``last`` order rows by
instant, with FHIRPath's partial-precision rules (:mod:`.ordering`).
"""

from __future__ import annotations

import gc
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter
from typing import Any

from dic_connector.errors import MappingError
from dic_connector.mapping.cohort import QUERY_VIEW, CohortMapping
from dic_connector.mapping.columns import (
    TYPE_RULES,
    Aggregate,
    BooleanRule,
    ColumnKind,
    ColumnSpec,
    InvalidValue,
    number,
    to_bool,
    to_date,
)
from dic_connector.mapping.ordering import pick
from dic_connector.sqlonfhir.view import compile_view

Row = dict[str, Any]

#: the aggregate of a patient without rows in the view
_EMPTY: dict[Aggregate, Any] = {a: None for a in Aggregate} | {Aggregate.COUNT: 0,
                                                               Aggregate.ANY: False}


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building large acyclic tables.

    Building 10^5 row dicts triggers full collections that traverse every live object (all
    the resources too) and double the cost of a join; the rows hold no reference cycles, so
    reference counting frees them anyway. The previous state is restored on exit.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class AssembledTable:
    """Raw (not yet validated) cohort table, one row per patient, in Patient-view order.

    Held by column: ``columns[name][i]`` is the value of mapping column ``name`` (those with
    a ``source``) for patient i, so no per-patient dict is built unless :attr:`rows` is
    read. :meth:`clear` drops every value.
    """

    columns: dict[str, list[Any]]
    count: int  #: patients (rows)
    orphan_rows: int  #: view rows whose patient key matched no patient
    resources: int  #: resources read

    @cached_property
    def rows(self) -> list[Row]:
        """The table as one dict per patient (built on first use, then kept)."""
        names = list(self.columns)
        if not names:
            return [{} for _ in range(self.count)]
        return [dict(zip(names, row, strict=True))
                for row in zip(*self.columns.values(), strict=True)]

    def clear(self) -> None:
        """Drop the references to every value (the columns, and :attr:`rows` if built)."""
        for values in self.columns.values():
            values.clear()
        self.columns.clear()
        rows = self.__dict__.pop("rows", None)
        if rows is not None:
            for row in rows:
                row.clear()
            rows.clear()


def view_columns(mapping: CohortMapping) -> dict[str, tuple[str, ...]]:
    """Per view, the columns the mapping reads: its key first, then sources and orders."""
    used: dict[str, list[str]] = {view.name: [view.key] for view in mapping.views}
    for col in mapping.columns:
        for ref in (col.source, col.order_by):
            if ref is not None and ref.column not in used[ref.view]:
                used[ref.view].append(ref.column)
    return {name: tuple(columns) for name, columns in used.items()}


def compact(rows: Iterable[Row], columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    """View rows as tuples of ``columns`` (a missing column is None): a third of a dict's
    memory, and the columns no mapping column reads are not kept at all."""
    getter = itemgetter(*columns)
    try:
        if len(columns) == 1:
            return [(getter(row),) for row in rows]
        return [getter(row) for row in rows]
    except KeyError:  # a row without some column (SQL rows, hand-built rows)
        return [tuple(row.get(c) for c in columns) for row in rows]


class _Interner:
    """One shared instance per distinct string of a view's non-key columns.

    A source gives every value its own object (JSON parsing makes a new ``str`` per value),
    so a million patients' ``"female"`` are a million strings. A column's values are mapped
    through a dict of the distinct ones seen, in C (``map(cache.setdefault, ...)``), a chunk
    at a time. Only columns of strings and nulls are shared (``1``, ``1.0`` and ``True`` are
    equal keys of a dict, so other types could come back as another); a column with more
    than :attr:`limit` distinct values (identifiers, timestamps) stops being shared.

    The key column is shared only through ``keys``, one dict for every view of a mapping
    and without a limit: the Patient's id and each Condition's or Coverage's reference to
    it are equal strings, kept once instead of once per view row (for PHAME about 150
    bytes per patient, for a dict of about 45).
    """

    limit = 1 << 16

    def __init__(self, width: int, keys: dict[Any, Any] | None = None) -> None:
        self._keys = keys
        self._caches: list[dict[Any, Any] | None] = [keys, *({} for _ in range(1, width))]

    def __call__(self, rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        if not rows or all(cache is None for cache in self._caches):
            return rows
        return list(zip(*self.columns(list(zip(*rows, strict=True))), strict=True))

    def columns(self, columns: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The same for a chunk of rows given by column: ``columns`` shared in place."""
        for i, cache in enumerate(self._caches):
            if cache is None or not set(map(type, columns[i])) <= _STRINGS:
                continue
            columns[i] = tuple(map(cache.setdefault, columns[i], columns[i]))
            if len(cache) > self.limit and cache is not self._keys:
                self._caches[i] = None
        return columns


_STRINGS = {str, type(None)}


class CohortBuilder:
    """The cohort table of ``mapping`` from its input delivered in chunks, in stream order.

    :meth:`add` takes FHIR resources for a mapping of ViewDefinitions (each view runs over
    the chunk's resources of its type and only the columns of its rows that the mapping
    reads are kept, as tuples) or the query's rows for a SQL mapping; :meth:`finish` joins
    and aggregates. Memory grows with the view rows, never with the resources, which the
    caller may drop after each :meth:`add`. The result equals :func:`build_cohort` over the
    concatenated chunks whatever the chunking: a view's rows keep resource order and the
    Patient view's order is the rows' order.
    """

    def __init__(self, mapping: CohortMapping) -> None:
        self.mapping = mapping
        #: items (resources or query rows) added so far
        self.items = 0
        self._columns = view_columns(mapping)
        self._rows: dict[str, list[tuple[Any, ...]]] = {view.name: [] for view in mapping.views}
        #: every view's keys, shared across views (only when there are several)
        self._keys: dict[Any, Any] | None = {} if len(self._columns) > 1 else None
        self._interners = {name: _Interner(len(cols), self._keys)
                           for name, cols in self._columns.items()}
        self._views = [] if mapping.query is not None else [
            (view.name, view.resource, compile_view(
                {"resourceType": "ViewDefinition", "status": "active", **view.definition},
                invalid_values=True))
            for view in mapping.views]

    def add(self, items: Iterable[dict[str, Any]]) -> None:
        """Run the views over a chunk of resources (or keep a chunk of query rows)."""
        if self.mapping.query is not None:
            rows = self._interners[QUERY_VIEW](compact(items, self._columns[QUERY_VIEW]))
            self._rows[QUERY_VIEW].extend(rows)
            self.items += len(rows)
            return
        resources = items if isinstance(items, list) else list(items)
        self.add_rows(self.run_views(resources), len(resources))

    def run_views(self, resources: Sequence[dict[str, Any]]) -> dict[str, list[tuple[Any, ...]]]:
        """The compact rows of every view over a chunk of resources, not kept here (what
        :meth:`add_rows` takes)."""
        by_type: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for resource in resources:
            by_type[resource.get("resourceType", "")].append(resource)
        out: dict[str, list[tuple[Any, ...]]] = {}
        with paused_gc():
            for name, resource_type, view in self._views:
                chunk = by_type.get(resource_type)
                if chunk:
                    out[name] = compact(view.run(chunk), self._columns[name])
        return out

    def run_views_by_column(self, resources: Sequence[dict[str, Any]]
                            ) -> dict[str, list[tuple[Any, ...]]]:
        """:meth:`run_views` with each view's rows given by column (what
        :meth:`add_columns` takes; a worker process may run this), a column's repeated
        strings shared within the chunk (a smaller pickle)."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        for name, rows in self.run_views(resources).items():
            if rows:
                out[name] = _Interner(len(self._columns[name])).columns(
                    list(zip(*rows, strict=True)))
        return out

    def add_rows(self, rows: Mapping[str, list[tuple[Any, ...]]], items: int) -> None:
        """Keep the view rows of a chunk of ``items`` resources (from :meth:`run_views`)."""
        self.items += items
        for name, view_rows in rows.items():
            self._rows[name].extend(self._interners[name](view_rows))

    def add_columns(self, columns: Mapping[str, list[tuple[Any, ...]]], items: int) -> None:
        """Keep the view rows of a chunk of ``items`` resources given by column (from
        :meth:`run_views_by_column`; the lists are shared in place)."""
        self.items += items
        for name, view_columns in columns.items():
            self._rows[name].extend(zip(*self._interners[name].columns(list(view_columns)),
                                        strict=True))

    def finish(self) -> AssembledTable:
        """Join and aggregate everything added; the builder's view rows are released."""
        try:
            with paused_gc():
                table = _assemble(self.mapping, self._rows, self._columns)
        finally:
            self.discard()
        return AssembledTable(table.columns, table.count, table.orphan_rows, self.items)

    def discard(self) -> None:
        """Release the view rows kept so far (after :meth:`finish`, or on a failure)."""
        for rows in self._rows.values():
            rows.clear()
        if self._keys is not None:
            self._keys.clear()


def build_cohort(mapping: CohortMapping, resources: Iterable[dict[str, Any]]) -> AssembledTable:
    """Run every view of ``mapping`` over ``resources`` and assemble the patient rows."""
    if mapping.query is not None:
        raise MappingError(f"{mapping.file}: a SQL mapping takes its rows from the SQL source "
                           "(assemble_rows), not from FHIR resources")
    builder = CohortBuilder(mapping)
    builder.add(resources)
    return builder.finish()


def assemble_rows(mapping: CohortMapping, view_rows: Mapping[str, Sequence[Row]]
                  ) -> AssembledTable:
    """Join view rows (already computed, e.g. by a SQL source) into one row per patient."""
    columns = view_columns(mapping)
    with paused_gc():
        rows = {name: compact(view_rows.get(name, ()), columns[name]) for name in columns}
        return _assemble(mapping, rows, columns)


def _assemble(mapping: CohortMapping, view_rows: Mapping[str, list[tuple[Any, ...]]],
              view_cols: Mapping[str, tuple[str, ...]]) -> AssembledTable:
    """The join over compact view rows (key first; see :func:`compact`).

    It takes the lists of ``view_rows`` over and joins one view at a time, the anchor
    first: a view's rows are grouped by patient, the columns it sources computed, then its
    rows and groups are released before the next view is grouped, so the peak holds the
    groups of one view only. The result is columnar: no per-patient dict is built.
    """
    anchor = mapping.anchor
    views = sorted(mapping.views, key=lambda view: view.name != anchor.name)  # anchor first
    computed: dict[str, list[Any]] = {}
    order: list[Any] = []
    patients: set[Any] = set()
    orphans = 0
    empty: list[tuple[Any, ...]] = []
    for view in views:
        rows = view_rows.get(view.name, [])
        grouped: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
        for row in rows:
            grouped[row[0]].append(row)
        if view.name == anchor.name:
            order = [key for key in grouped if key is not None]
            patients = set(order)
        else:
            orphans += sum(len(group) for key, group in grouped.items() if key not in patients)
        by_source: dict[int, dict[Any, list[Any]]] = {}
        distinct: dict[int, dict[str, Any]] = {}  # per source: _fast_column's cache
        in_order: list[list[tuple[Any, ...]]] | None = None
        view_names = view_cols[view.name]
        for col in mapping.columns:
            if col.source is None or col.source.view != view.name:
                continue
            at = view_names.index(col.source.column)
            by = None if col.order_by is None else view_names.index(col.order_by.column)
            if col.aggregate in (Aggregate.ANY, Aggregate.COUNT):
                if at not in by_source:
                    by_source[at] = _present(grouped, at)
                fast = _fast_column(col, by_source[at], order, distinct.setdefault(at, {}))
                if fast is not None:
                    computed[col.name] = fast
                    continue
            if in_order is None:
                in_order = [grouped.get(key, empty) for key in order]
            computed[col.name] = _column_values(col, in_order, at, by)
        del in_order
        by_source.clear()
        distinct.clear()
        grouped.clear()
        rows.clear()
    for rows in view_rows.values():
        rows.clear()
    names = [col.name for col in mapping.columns if col.source is not None]
    return AssembledTable({name: computed[name] for name in names}, len(order), orphans, 0)


def _present(grouped: Mapping[Any, list[tuple[Any, ...]]], at: int) -> dict[Any, list[Any]]:
    """Per patient key, the non-null values of one view column."""
    out: dict[Any, list[Any]] = {}
    for key, rows in grouped.items():
        present = [v for r in rows if (v := r[at]) is not None]
        if present:
            out[key] = present
    return out


def _fast_column(col: ColumnSpec, present: Mapping[Any, list[Any]], order: list[Any],
                 cache: dict[str, Any]) -> list[Any] | None:
    """COUNT, and ANY over a code set, from shared per-patient values (None: no fast path).

    ``cache`` is kept across the columns of one source (the distinct values, computed once).
    """
    if col.aggregate is Aggregate.COUNT:
        return [len(present.get(key, ())) for key in order]
    rule = col.rule
    if not (isinstance(rule, BooleanRule) and rule.matches_codes):
        return None
    if "distinct" not in cache:
        try:
            values = {v for values in present.values() for v in values}
        except TypeError:  # unhashable values (collection columns): the general path decides
            values = None
        cache["distinct"] = None if values is None or any(
            type(v) is not str for v in values) else values
    distinct: set[str] | None = cache["distinct"]
    if distinct is None:
        return None
    matching = {v for v in distinct if v in rule.codes or v.startswith(rule.prefixes)}
    hits = {key for key, values in present.items() if not matching.isdisjoint(values)}
    return [key in hits for key in order]


def _column_values(col: ColumnSpec, patients: list[list[tuple[Any, ...]]], at: int,
                   by: int | None) -> list[Any]:
    """The column's value for every patient, from each patient's rows in the source view."""
    if col.aggregate is Aggregate.ONE:
        return [rows[0][at] if len(rows) == 1 else aggregate(col, rows, at, by)
                for rows in patients]
    return [aggregate(col, rows, at, by) for rows in patients]


def aggregate(col: ColumnSpec, rows: Sequence[tuple[Any, ...]], at: int, by: int | None
              ) -> Any:
    """The column's per-patient value from its source rows (an InvalidValue on failure):
    the value at position ``at`` of each row, ordered by position ``by`` for first/last."""
    how = col.aggregate
    if not rows:
        return _EMPTY[how]
    if how is Aggregate.ONE:
        if len(rows) == 1:
            return rows[0][at]
        values: list[Any] = []
        for r in rows:
            v = r[at]
            if type(v) is InvalidValue:  # a cell its view could not give
                return v
            if v is not None and v not in values:
                values.append(v)
        if len(values) > 1:
            return InvalidValue("multiple values", "aggregate 'one': one value per patient")
        return values[0] if values else None
    if how is Aggregate.COUNT:
        return sum(1 for r in rows if r[at] is not None)
    if how in (Aggregate.FIRST, Aggregate.LAST):
        assert col.order_by is not None and by is not None
        pairs = [(r[by], r[at]) for r in rows if r[by] is not None and r[at] is not None]
        if not pairs:
            return None
        return pick(pairs, how is Aggregate.LAST, f"{col.order_by.view}.{col.order_by.column}")
    present = [v for r in rows if (v := r[at]) is not None]
    invalid = next((v for v in present if type(v) is InvalidValue), None)
    if invalid is not None:  # a value its view could not give spoils the aggregate
        return invalid
    rule = col.rule
    try:
        if how in (Aggregate.ANY, Aggregate.ALL):
            assert isinstance(rule, BooleanRule)
            flags = [to_bool(rule, v) for v in present]
            if how is Aggregate.ANY:
                return any(flags)
            return all(flags) if flags else None
        if not present:
            return None
        if col.kind is ColumnKind.NUMERIC:
            present = [number(v) for v in present]
        elif col.kind is ColumnKind.DATE:
            for v in present:  # every value must be a date, not only the one picked
                to_date(v)
        return min(present) if how is Aggregate.MIN else max(present)
    except InvalidValue as exc:
        return exc
    except TypeError:  # values of different types: for a date column, some are not dates
        if col.kind is ColumnKind.DATE:
            return InvalidValue("not a date", TYPE_RULES["date"])
        return InvalidValue("not comparable", f"aggregate {how.value!r}")
