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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import DataValidationError
from dic_connector.mapping.cohort import CohortMapping
from dic_connector.mapping.columns import (
    CategoricalRule,
    ColumnKind,
    ColumnSpec,
    DateRule,
    Missing,
    NumericRule,
)

INT64_MAX = 2**63 - 1


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

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "column": self.column,
                               "scale": self.scale}
        if self.unit is not None:
            out["unit"] = self.unit
        if self.levels:
            out["levels"] = list(self.levels)
        if self.level is not None:
            out["level"] = self.level
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
        out = [EncodedColumn(col.name, "date", col.name, rule.scale, rule.unit.value)]
    elif isinstance(rule, CategoricalRule):
        out = [EncodedColumn(col.name, "categorical", col.name, levels=rule.levels)]
        out += [EncodedColumn(f"{col.name}={lv}", "one_hot", col.name, level=lv)
                for lv in rule.levels]
    else:
        out = [EncodedColumn(col.name, "boolean", col.name)]
    if col.missing is Missing.INDICATOR:
        out.append(EncodedColumn(f"{col.name}__present", "present", col.name))
    return out


def encode_table(rows: Sequence[Mapping[str, Any]],
                 schema: CohortMapping | Sequence[ColumnSpec]) -> EncodedTable:
    """Integer matrix and manifest of validated rows (see :func:`validate_rows`)."""
    columns = schema.columns if isinstance(schema, CohortMapping) else schema
    exported = [c for c in columns if c.export and c.kind is not ColumnKind.PATIENT_KEY]
    manifest: list[EncodedColumn] = []
    blocks: list[npt.NDArray[np.int64]] = []
    n = len(rows)
    for col in exported:
        entries = _value_columns(col)
        block = np.zeros((n, len(entries)), dtype=np.int64)
        values = [row.get(col.name) for row in rows]
        mask = np.fromiter((v is not None for v in values), dtype=bool, count=n)
        if col.missing is Missing.INDICATOR:
            block[:, -1] = mask
        elif not mask.all():
            first = int(np.argmin(mask))
            raise DataValidationError(f"row {first}, column {col.name!r}: missing (not "
                                      "validated: run validate_rows first)")
        rule = col.rule
        if isinstance(rule, CategoricalRule):
            levels = {lv: i for i, lv in enumerate(rule.levels)}
            index = np.fromiter((levels[v] if v is not None else 0 for v in values),
                                dtype=np.int64, count=n)
            block[:, 0] = index
            rows_present = np.flatnonzero(mask)
            block[rows_present, 1 + index[rows_present]] = 1
        elif col.kind is ColumnKind.BOOLEAN:
            block[:, 0] = np.fromiter((1 if v else 0 for v in values), dtype=np.int64, count=n)
        else:
            scale = col.scale
            block[:, 0] = [0 if v is None else _fixed(v, scale, col.name, i)
                           for i, v in enumerate(values)]
        manifest.extend(entries)
        blocks.append(block)
    matrix = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0), dtype=np.int64)
    return EncodedTable(values=matrix, columns=tuple(manifest))
