"""Row validation: every value against its declared type and range, with a per-column policy.

:func:`validate_rows` checks a raw cohort table (one dict per patient, as assembled from the
views or read from a SQL query) against the mapping's typed columns
(:mod:`dic_connector.mapping.columns`) and returns the typed, clean rows plus a
:class:`ValidationReport`; :func:`validate_columns` does the same for a table held by
column (as :class:`~dic_connector.mapping.assemble.AssembledTable` holds it) and returns
the clean table by column, with no dict per row.

A failure is named by *row position* (0-based, in table order), column, value class
("above maximum", "not a number", "unknown level", "missing", ...) and rule — never by the
patient's identifier or the value, because reports and errors are logged (DESIGN.md section
1: no person sees patient rows). A value of the wrong type is such a failure too, its rule
``type: <what was expected>`` (:data:`~dic_connector.mapping.columns.TYPE_RULES`), whether
validation finds it (text in a numeric column) or a view could not give the cell (an
:class:`~dic_connector.mapping.columns.InvalidValue` in the raw table: text in a view's
arithmetic, a value not of the view column's declared type). What happens next is the
column's policy:

- ``on_invalid: reject_row`` (default) drops the row and counts it;
  ``on_invalid: fail_dataset`` raises :class:`~dic_connector.errors.DataValidationError`;
- ``missing: reject_row`` / ``fail_dataset`` likewise for a missing value, while
  ``missing: indicator`` keeps the row (the encoder adds a ``<col>__present`` column).

All columns of every row are checked (a column at a time, :mod:`.convert`), so one bad
``fail_dataset`` column fails the dataset even when another column already rejected the
row, and the report counts a row under every (column, value class) it broke;
``rows_rejected`` counts each row once.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from dic_connector.encoding.convert import convert_column
from dic_connector.errors import DataValidationError
from dic_connector.mapping.assemble import paused_gc
from dic_connector.mapping.cohort import CohortMapping
from dic_connector.mapping.columns import ColumnSpec, Missing, OnInvalid

MAX_LISTED_ERRORS = 100  #: row errors kept verbatim in a report; all are counted


@dataclass(frozen=True)
class RowError:
    """One broken rule: where (row position, column), what class of value, which rule."""

    row: int
    column: str
    value_class: str
    rule: str

    def __str__(self) -> str:
        return f"row {self.row}, column {self.column!r}: {self.value_class} ({self.rule})"


@dataclass(frozen=True)
class ValidationReport:
    """Counts of what validation did; nothing in it is row-level data."""

    rows_in: int
    rows_out: int
    #: (column, value class, rule) -> number of rows rejected for it
    rejected: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    #: (column) -> rows kept with a missing value under ``missing: indicator``
    missing_kept: Mapping[str, int] = field(default_factory=dict)
    errors: tuple[RowError, ...] = ()  #: the first MAX_LISTED_ERRORS failures

    @property
    def rows_rejected(self) -> int:
        return self.rows_in - self.rows_out

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the audit log."""
        return {
            "rows_in": self.rows_in, "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "rejected": [{"column": c, "value_class": v, "rule": r, "rows": n}
                         for (c, v, r), n in sorted(self.rejected.items())],
            "missing_kept": dict(sorted(self.missing_kept.items())),
        }


class ValidationResult(NamedTuple):
    """``clean, report = validate_rows(...)``; ``positions[i]`` is the input row of clean[i]."""

    rows: list[dict[str, Any]]
    report: ValidationReport
    positions: tuple[int, ...]


class ColumnsResult(NamedTuple):
    """What :func:`validate_columns` returns: the clean table by column.

    ``columns[name][i]`` is the typed value of column ``name`` in clean row i, which was
    input row ``positions[i]``; every column of the schema has a list of ``rows`` values.
    """

    columns: dict[str, list[Any]]
    rows: int
    report: ValidationReport
    positions: tuple[int, ...]


def _columns(schema: CohortMapping | Sequence[ColumnSpec]) -> Sequence[ColumnSpec]:
    return schema.columns if isinstance(schema, CohortMapping) else schema


def validate_rows(table: Sequence[Mapping[str, Any]],
                  schema: CohortMapping | Sequence[ColumnSpec]) -> ValidationResult:
    """Typed clean rows of ``table`` and the report; DataValidationError on fail_dataset."""
    columns = _columns(schema)
    with paused_gc():
        result = _validate({col.name: [row.get(col.name) for row in table] for col in columns},
                           len(table), columns)
        names = list(result.columns)
        clean = [dict(zip(names, cells, strict=True))
                 for cells in zip(*result.columns.values(), strict=True)]
        if not names:
            clean = [{} for _ in range(result.rows)]
    return ValidationResult(clean, result.report, result.positions)


def validate_columns(table: Mapping[str, Sequence[Any]], count: int,
                     schema: CohortMapping | Sequence[ColumnSpec]) -> ColumnsResult:
    """:func:`validate_rows` for a table held by column (``table[name][i]``, ``count`` rows;
    a column missing from ``table`` is all missing): the clean table by column, never a
    dict per row."""
    columns = _columns(schema)
    with paused_gc():
        return _validate({col.name: table[col.name] if col.name in table else [None] * count
                          for col in columns}, count, columns)


def _validate(raw: Mapping[str, Sequence[Any]], count: int, columns: Sequence[ColumnSpec]
              ) -> ColumnsResult:
    typed: dict[str, list[Any]] = {}
    dates: dict[str, list[dt.date | None]] = {}
    failures: dict[int, list[RowError]] = {}
    for col in columns:
        values, invalid = convert_column(col, raw[col.name], typed, dates)
        typed[col.name] = values
        for pos, exc in invalid:
            failure = RowError(pos, col.name, exc.value_class, exc.rule)
            if col.on_invalid is OnInvalid.FAIL_DATASET:
                raise DataValidationError(f"{failure}; policy on_invalid: fail_dataset")
            failures.setdefault(pos, []).append(failure)
        if col.missing is Missing.INDICATOR:
            continue
        bad = {pos for pos, _ in invalid}
        rule = f"missing: {col.missing.value}"
        for pos, value in enumerate(values):
            if value is None and pos not in bad:
                failure = RowError(pos, col.name, "missing", rule)
                if col.missing is Missing.FAIL_DATASET:
                    raise DataValidationError(str(failure))
                failures.setdefault(pos, []).append(failure)
    dates.clear()
    names = [col.name for col in columns]
    positions = [pos for pos in range(count) if pos not in failures]
    if failures:  # keep the clean rows only, a column at a time
        for name in names:
            values = typed[name]
            typed[name] = [values[pos] for pos in positions]
            values.clear()
    rejected: Counter[tuple[str, str, str]] = Counter()
    errors: list[RowError] = []
    for pos in sorted(failures):
        row_failures = sorted(failures[pos], key=lambda f: names.index(f.column))
        rejected.update((f.column, f.value_class, f.rule) for f in row_failures)
        errors.extend(row_failures[: max(0, MAX_LISTED_ERRORS - len(errors))])
    indicated = [c.name for c in columns if c.missing is Missing.INDICATOR]
    kept = {name: typed[name].count(None) for name in indicated}
    report = ValidationReport(rows_in=count, rows_out=len(positions), rejected=dict(rejected),
                              missing_kept=kept, errors=tuple(errors))
    return ColumnsResult({name: typed[name] for name in names}, len(positions), report,
                         tuple(positions))
