"""The dataset manifest as the analyses read it: one :class:`ColumnInfo` per matrix column.

The connector's encoder (:mod:`dic_connector.encoding.encode`) lays a cohort table out as
signed 64-bit integers, one matrix column per value (``age``), per level of a categorical
(``gender=male``, one-hot) and per missing-value indicator (``age__present``), and describes
each in the version's manifest (:meth:`~dic_connector.encoding.encode.EncodedColumn.as_dict`):
its kind, the typed column it belongs to, its fixed-point scale, its levels. This module
parses and checks those entries (:func:`parse_manifest`) and finds the matrix columns of a
typed column (:func:`present_column`, :func:`one_hot_columns`); it knows nothing of shares.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from dic_connector.errors import AnalysisError

#: Kinds of manifest entries (:mod:`dic_connector.encoding.encode`).
KINDS = frozenset({"numeric", "date", "boolean", "categorical", "one_hot", "present"})
#: Kinds of the entry that carries a typed column's own name.
TYPED_KINDS = frozenset({"numeric", "date", "boolean", "categorical"})
#: Suffix of the missing-value indicator column.
PRESENT_SUFFIX = "__present"


def _optional_str(entry: Mapping[str, Any], key: str, where: str) -> str | None:
    value = entry.get(key)
    if value is not None and not isinstance(value, str):
        raise AnalysisError(f"{where}: '{key}' must be a string")
    return value


def _optional_number(entry: Mapping[str, Any], key: str, where: str) -> float | None:
    value = entry.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnalysisError(f"{where}: '{key}' must be a number")
    return float(value)


@dataclass(frozen=True)
class ColumnInfo:
    """One manifest entry of a stored dataset version (see mapping.encode.EncodedColumn.as_dict).

    ``minimum``/``maximum`` (optional, in the column's unit, not scaled) are the declared
    range of a numeric or date column when the manifest carries it; analyses that need a
    bound (median: sort key width; mean: no overflow of the 64-bit sum) then rely on it, as
    the data owner's encoder enforces it, and otherwise check a safe bound under MPC.
    """

    name: str
    kind: str
    column: str
    scale: int = 0
    unit: str | None = None
    levels: tuple[str, ...] = ()
    level: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    #: a date column's origin as an ISO date, when the offsets count from a fixed date
    #: (``since``): lets a filter compare the column with a calendar date
    origin: str | None = None

    @classmethod
    def from_manifest(cls, entry: dict[str, Any]) -> ColumnInfo:
        """Parse and check one entry; :class:`AnalysisError` naming the entry and field."""
        if not isinstance(entry, Mapping):
            raise AnalysisError("dataset manifest: a column entry must be an object")
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise AnalysisError("dataset manifest: a column entry has no 'name'")
        where = f"dataset manifest, column '{name}'"
        kind = entry.get("kind")
        if kind not in KINDS:
            raise AnalysisError(f"{where}: 'kind' must be one of {', '.join(sorted(KINDS))}")
        column = entry.get("column", name)
        if not isinstance(column, str) or not column:
            raise AnalysisError(f"{where}: 'column' must be a non-empty string")
        scale = entry.get("scale", 0)
        if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 18:
            raise AnalysisError(f"{where}: 'scale' must be an integer in 0..18")
        levels = entry.get("levels", ())
        if not isinstance(levels, list | tuple) or not all(isinstance(v, str) for v in levels):
            raise AnalysisError(f"{where}: 'levels' must be a list of strings")
        if len(set(levels)) != len(levels):
            raise AnalysisError(f"{where}: 'levels' must be distinct")
        minimum = _optional_number(entry, "minimum", where)
        maximum = _optional_number(entry, "maximum", where)
        if minimum is not None and maximum is not None and minimum > maximum:
            raise AnalysisError(f"{where}: 'minimum' is above 'maximum'")
        origin = _optional_str(entry, "origin", where)
        if origin is not None:
            try:
                dt.date.fromisoformat(origin)
            except ValueError as exc:
                raise AnalysisError(f"{where}: 'origin' must be an ISO date") from exc
        return cls(name=name, kind=kind, column=column, scale=scale,
                   unit=_optional_str(entry, "unit", where), levels=tuple(levels),
                   level=_optional_str(entry, "level", where), minimum=minimum,
                   maximum=maximum, origin=origin)

    def encoded_bounds(self) -> tuple[int | None, int | None]:
        """The declared range as ring integers (value * 10^scale), widened outwards so that
        every value the encoder accepts (it rounds half to even) lies inside."""
        low = high = None
        if self.minimum is not None:
            low = int(Decimal(repr(self.minimum)).scaleb(self.scale)
                      .to_integral_value(rounding=ROUND_FLOOR))
        if self.maximum is not None:
            high = int(Decimal(repr(self.maximum)).scaleb(self.scale)
                       .to_integral_value(rounding=ROUND_CEILING))
        return low, high


def parse_manifest(entries: Iterable[dict[str, Any]]) -> dict[str, ColumnInfo]:
    """Matrix column name -> :class:`ColumnInfo` for a manifest's ``columns`` list."""
    out: dict[str, ColumnInfo] = {}
    for entry in entries:
        info = ColumnInfo.from_manifest(entry)
        if info.name in out:
            raise AnalysisError(f"dataset manifest: column '{info.name}' is declared twice")
        out[info.name] = info
    return out


def present_column(manifest: Mapping[str, ColumnInfo], column: str) -> str | None:
    """``<column>__present`` when the manifest has that missing-value indicator."""
    name = column + PRESENT_SUFFIX
    info = manifest.get(name)
    return name if info is not None and info.kind == "present" else None


def one_hot_columns(info: ColumnInfo) -> list[str]:
    """The one-hot matrix columns ``<column>=<level>`` of a categorical, in level order."""
    return [f"{info.name}={level}" for level in info.levels]
