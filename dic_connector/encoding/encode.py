"""Encoding a validated cohort table as an integer matrix ready for secret sharing.

The MPC engine computes on the ring Z_2^64 (DESIGN.md section 4), so every value leaves this
step as a signed 64-bit integer, and the *manifest* says how to read it back:

- ``numeric``: fixed point, ``round_half_even(value * 10^scale)`` computed in decimal (no
  binary-float artefacts: 0.29 at scale 2 is 29, never 28; a :class:`~decimal.Decimal`, as
  FHIR decimals parsed with their digits and computed decimals are, is scaled as it is);
- ``date``: the offset from its origin in days / completed years, or months * 10^scale;
- ``boolean``: 0/1;
- ``categorical``: the 0-based level index in ``<col>`` *and* one 0/1 indicator per level
  in ``<col>=<level>``, so frequency tables and categorical filters are sums and products
  under MPC, with no secure comparison;
- ``missing: indicator``: the value is encoded as 0 (all indicators 0 for a categorical) and
  a ``<col>__present`` 0/1 column is added.

Columns with ``export: false`` (the ``patient_key`` always, and e.g. a birth date used only
as an origin) are not encoded. Matrix columns are in declaration order; for each typed
column: the value column, then its one-hot columns, then its ``__present`` column.

:func:`encode_columns` encodes a table held by column into :class:`EncodedColumns`: one
int64 array per typed column (the level index of a categorical), from which the matrix
columns are produced one at a time as the uploader shares them, so the full matrix (for
PHAME 75 columns, 600 bytes per patient) never exists. :func:`encode_table` lays the same
columns out as an :class:`EncodedTable` matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import DataValidationError
from dic_connector.mapping.cohort import CohortMapping
from dic_connector.mapping.columns import (
    INT64_MAX,
    CategoricalRule,
    ColumnKind,
    ColumnSpec,
    DateRule,
    Missing,
    NumericRule,
)


@dataclass(frozen=True)
class EncodedColumn:
    """How to read one matrix column back (the manifest entry)."""

    name: str  #: matrix column name: ``age``, ``gender=male``, ``local_control__present``
    kind: str  #: numeric | date | boolean | categorical | one_hot | present
    column: str  #: the typed column it comes from
    scale: int = 0  #: decimal places: real value = integer / 10^scale
    unit: str | None = None  #: UCUM unit, or days/months/years for dates
    levels: tuple[str, ...] = ()  #: categorical: the level of each index
    level: str | None = None  #: one_hot: the level this column indicates
    #: date counted ``since`` a fixed date: that date (ISO), so a filter may name a date
    origin: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "column": self.column,
                               "scale": self.scale}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.levels:
            out["levels"] = list(self.levels)
        if self.level is not None:
            out["level"] = self.level
        if self.origin is not None:
            out["origin"] = self.origin
        return out


@dataclass(frozen=True)
class EncodedTable:
    """``values[i, j]``: row i (clean-table order), matrix column ``columns[j]``; int64."""

    values: npt.NDArray[np.int64]
    columns: tuple[EncodedColumn, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> npt.NDArray[np.int64]:
        """One matrix column by name (a view, not a copy)."""
        return self.values[:, self.names.index(name)]

    def manifest(self) -> list[dict[str, Any]]:
        return [c.as_dict() for c in self.columns]


def _fixed(value: Any, scale: int, name: str, row: int) -> int:
    if type(value) is int and abs(value) <= INT64_MAX // 10**scale:
        scaled_int: int = value * 10**scale
        return scaled_int
    exact = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    scaled = int(exact.scaleb(scale).to_integral_value(rounding=ROUND_HALF_EVEN))
    if abs(scaled) > INT64_MAX:
        raise DataValidationError(f"row {row}, column {name!r}: out of the 64-bit range "
                                  f"at scale {scale} (encoding)")
    return scaled


def _value_columns(col: ColumnSpec) -> list[EncodedColumn]:
    rule = col.rule
    if isinstance(rule, NumericRule):
        out = [EncodedColumn(col.name, "numeric", col.name, rule.scale, rule.unit)]
    elif isinstance(rule, DateRule):
        fixed = rule.since.date if rule.since is not None else None
        out = [EncodedColumn(col.name, "date", col.name, rule.scale, rule.unit.value,
                             origin=None if fixed is None else fixed.isoformat())]
    elif isinstance(rule, CategoricalRule):
        out = [EncodedColumn(col.name, "categorical", col.name, levels=rule.levels)]
        out += [EncodedColumn(f"{col.name}={lv}", "one_hot", col.name, level=lv)
                for lv in rule.levels]
    else:
        out = [EncodedColumn(col.name, "boolean", col.name)]
    if col.missing is Missing.INDICATOR:
        out.append(EncodedColumn(f"{col.name}__present", "present", col.name))
    return out


@dataclass
class _Block:
    """One typed column prepared for the matrix: its int64 values (the level index of a
    categorical) and, where values may be missing, the mask of present ones."""

    entries: list[EncodedColumn]
    values: npt.NDArray[np.int64]
    present: npt.NDArray[np.bool_] | None
    levels: int = 0  #: categorical: one one-hot column per level after the value column

    def matrix_columns(self) -> Iterator[npt.NDArray[np.int64]]:
        """The block's matrix columns in manifest order, each a new array."""
        yield self.values.copy()
        for level in range(self.levels):
            hot = self.values == level
            if self.present is not None:
                hot &= self.present
            yield hot.astype(np.int64)
        if self.present is not None and self.entries[-1].kind == "present":
            yield self.present.astype(np.int64)

    def clear(self) -> None:
        self.values.fill(0)
        if self.present is not None:
            self.present.fill(False)


class EncodedColumns:
    """A clean table encoded but not yet laid out as a matrix: the manifest (:attr:`columns`)
    and, per typed column, its prepared int64 values (8 bytes per row, plus a mask where
    values may be missing). :meth:`matrix_columns` produces the matrix columns one at a
    time, so one-hot and ``__present`` columns exist only while they are consumed;
    :meth:`matrix` lays them all out (:class:`EncodedTable`). :meth:`clear` zeroes and drops
    every prepared array (and is called by :meth:`matrix_columns` once exhausted)."""

    def __init__(self, rows: int, blocks: list[_Block]) -> None:
        self.rows = rows
        self.columns: tuple[EncodedColumn, ...] = tuple(e for b in blocks for e in b.entries)
        self._blocks = blocks

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def cleared(self) -> bool:
        """Whether every prepared array has been zeroed and dropped."""
        return not self._blocks

    def matrix_columns(self) -> Iterator[npt.NDArray[np.int64]]:
        """Matrix column after matrix column (``rows`` int64 values each), in manifest order;
        a block's arrays are zeroed and dropped once its last column is produced."""
        try:
            while self._blocks:
                block = self._blocks[0]
                yield from block.matrix_columns()
                block.clear()
                self._blocks.pop(0)
        finally:
            self.clear()

    def each_matrix_column(self) -> Iterator[npt.NDArray[np.int64]]:
        """Every matrix column in manifest order, each a new array that the caller zeroes
        once used, leaving the prepared arrays in place: a pass over the table before
        :meth:`matrix_columns` hands it over (e.g. for row digests)."""
        for block in self._blocks:
            yield from block.matrix_columns()

    def matrix(self) -> EncodedTable:
        """All matrix columns laid out as one ``rows x columns`` matrix (then :meth:`clear`)."""
        values = np.zeros((self.rows, len(self.columns)), dtype=np.int64)
        for j, column in enumerate(self.matrix_columns()):
            values[:, j] = column
            column.fill(0)
        return EncodedTable(values=values, columns=self.columns)

    def clear(self) -> None:
        """Zero and drop every prepared array not yet consumed."""
        for block in self._blocks:
            block.clear()
        self._blocks.clear()


def _block(col: ColumnSpec, values: Sequence[Any], n: int) -> _Block:
    """One typed column's values (``n`` of them, validated) prepared for the matrix."""
    entries = _value_columns(col)
    mask = np.fromiter((v is not None for v in values), dtype=bool, count=n)
    if col.missing is not Missing.INDICATOR and not mask.all():
        first = int(np.argmin(mask))
        raise DataValidationError(f"row {first}, column {col.name!r}: missing (not "
                                  "validated: run validate_rows first)")
    present = mask if col.missing is Missing.INDICATOR else None
    rule = col.rule
    if isinstance(rule, CategoricalRule):
        levels = {lv: i for i, lv in enumerate(rule.levels)}
        index = np.fromiter((levels[v] if v is not None else 0 for v in values),
                            dtype=np.int64, count=n)
        return _Block(entries, index, present, len(rule.levels))
    if col.kind is ColumnKind.BOOLEAN:
        flags = np.fromiter((1 if v else 0 for v in values), dtype=np.int64, count=n)
        return _Block(entries, flags, present)
    scale = col.scale
    if all(type(v) is int for v in values) and (
            not values or max(map(abs, values)) <= INT64_MAX // 10**scale):
        fixed = np.fromiter(values, dtype=np.int64, count=n)  # the common case: whole numbers
        if scale:
            fixed *= 10**scale
    else:
        fixed = np.fromiter((0 if v is None else _fixed(v, scale, col.name, i)
                             for i, v in enumerate(values)), dtype=np.int64, count=n)
    return _Block(entries, fixed, present)


def encode_columns(table: Mapping[str, Sequence[Any]], rows: int,
                   schema: CohortMapping | Sequence[ColumnSpec]) -> EncodedColumns:
    """The encoding of validated columns (``table[name][i]``, ``rows`` rows, as
    :func:`~dic_connector.encoding.validate.validate_columns` returns them), column by
    column: no matrix and no dict per row is built."""
    columns = schema.columns if isinstance(schema, CohortMapping) else schema
    exported = [c for c in columns if c.export and c.kind is not ColumnKind.PATIENT_KEY]
    blocks: list[_Block] = []
    try:
        for col in exported:
            blocks.append(_block(col, table.get(col.name) or [None] * rows, rows))
    except BaseException:
        for block in blocks:
            block.clear()
        raise
    return EncodedColumns(rows, blocks)


def encode_table(rows: Sequence[Mapping[str, Any]],
                 schema: CohortMapping | Sequence[ColumnSpec]) -> EncodedTable:
    """Integer matrix and manifest of validated rows (see :func:`validate_rows`)."""
    columns = schema.columns if isinstance(schema, CohortMapping) else schema
    exported = [c for c in columns if c.export and c.kind is not ColumnKind.PATIENT_KEY]
    table = {col.name: [row.get(col.name) for row in rows] for col in exported}
    return encode_columns(table, len(rows), exported).matrix()
