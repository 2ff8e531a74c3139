"""Typed cohort columns: what a value may be, and how a raw value becomes a typed one.

A cohort table (DESIGN.md section 3) is one row per patient; each column declares a *kind*:

- ``patient_key``  the join key (``getResourceKey()`` of the Patient); never encoded, never
  shared, never named in a message;
- ``numeric``      a decimal with a UCUM ``unit``, a fixed ``scale`` (decimal places kept
  when encoded as an integer, as fixed-point for the MPC ring) and an optional closed range;
- ``categorical``  a closed list of ``levels`` (optionally a ``map`` from source codes to
  levels, an ``other`` level for unknown codes, or ``bins`` cutting an earlier numeric/date
  column into levels);
- ``boolean``      true/false, optionally computed by matching codes or code prefixes
  (ICD-10 code sets);
- ``date``         encoded as whole ``days``, ``months`` (days / 30.4375, kept to ``scale``
  decimals) or completed calendar ``years`` ``since`` an origin (value - origin) or ``until``
  one (origin - value); the origin is a fixed date or an earlier date column of the row.

:func:`coerce` turns one raw value (as produced by the ViewDefinitions and the per-patient
aggregation) into its typed value or raises :class:`InvalidValue` with a *value class*
("above maximum", "not a number", "unknown level", ...) and the rule broken. Neither ever
contains the value itself, so both can be logged. A value of the wrong type (text where a
number is expected, ``maybe`` for a boolean, ``2020-13-45`` for a date, an object where a
code is expected) breaks a rule named ``type: <what was expected>`` (:data:`TYPE_RULES`),
as an out-of-range one breaks ``min``/``max``, and the column's ``on_invalid`` policy
decides alike; so does a number too large for the 64-bit encoding at the column's scale.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from dic_connector.sqlonfhir.view_tree import InvalidValue as InvalidValue  # re-exported

DAYS_PER_MONTH = 365.25 / 12
INT64_MAX = 2**63 - 1

#: the rule a value of the wrong type breaks, per expected type: what was expected, never
#: the value (a ``/`` would be ambiguous in the run history's ``column/class/rule`` keys)
TYPE_RULES = {
    "number": "type: number",
    "date": "type: date (YYYY-MM-DD)",
    "boolean": "type: boolean (true or false)",
    "code": "type: code (text or number)",
    "text code": "type: code (text)",
}


class ColumnKind(StrEnum):
    PATIENT_KEY = "patient_key"  #: the local join key; never leaves the connector
    NUMERIC = "numeric"  #: fixed-point decimal with unit and scale
    CATEGORICAL = "categorical"  #: closed list of levels, one-hot encoded as well
    BOOLEAN = "boolean"  #: 0/1
    DATE = "date"  #: days/months/years since (or until) an origin


class Aggregate(StrEnum):
    ONE = "one"  #: at most one distinct value per patient, else "multiple values"
    FIRST = "first"  #: the earliest row by ``order_by`` with a value
    LAST = "last"  #: the latest row by ``order_by`` with a value
    COUNT = "count"  #: number of rows with a value (0 when none)
    ANY = "any"  #: some row is true (false when none)
    ALL = "all"  #: every row is true (missing when none)
    MIN = "min"  #: smallest value
    MAX = "max"  #: largest value


class OnInvalid(StrEnum):
    REJECT_ROW = "reject_row"  #: drop the patient's row, count it in the report
    FAIL_DATASET = "fail_dataset"  #: refuse the whole dataset


class Missing(StrEnum):
    REJECT_ROW = "reject_row"  #: drop the row
    FAIL_DATASET = "fail_dataset"  #: refuse the dataset
    INDICATOR = "indicator"  #: encode 0 plus a ``<col>__present`` 0/1 column


class DateUnit(StrEnum):
    DAYS = "days"
    MONTHS = "months"
    YEARS = "years"


@dataclass(frozen=True)
class SourceRef:
    """``view.column``: a column of one of the mapping's views (or of the SQL query)."""

    view: str
    column: str


@dataclass(frozen=True)
class NumericRule:
    unit: str
    scale: int = 0
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class Bins:
    """Cut an earlier numeric or date column at ``edges``: level i is edges[i-1] <= v < edges[i]."""

    column: str
    edges: tuple[float, ...]


@dataclass(frozen=True)
class CategoricalRule:
    levels: tuple[str, ...]
    other: str | None = None
    value_map: dict[str, str] = field(default_factory=dict)
    bins: Bins | None = None


@dataclass(frozen=True)
class BooleanRule:
    """Either a true/false source, or a code that is true when in ``codes`` or prefixed."""

    codes: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @property
    def matches_codes(self) -> bool:
        return bool(self.codes or self.prefixes)


@dataclass(frozen=True)
class Origin:
    """A fixed date, or the name of an earlier date column of the same row."""

    date: dt.date | None = None
    column: str | None = None


@dataclass(frozen=True)
class DateRule:
    unit: DateUnit
    scale: int = 0
    since: Origin | None = None
    until: Origin | None = None
    minimum: float | None = None
    maximum: float | None = None


Rule = NumericRule | CategoricalRule | BooleanRule | DateRule | None


@dataclass(frozen=True)
class ColumnSpec:
    """One typed column of a cohort table, as declared in the mapping file."""

    name: str
    kind: ColumnKind
    source: SourceRef | None
    rule: Rule
    aggregate: Aggregate = Aggregate.ONE
    order_by: SourceRef | None = None
    on_invalid: OnInvalid = OnInvalid.REJECT_ROW
    missing: Missing = Missing.REJECT_ROW
    export: bool = True
    description: str = ""

    @property
    def scale(self) -> int:
        """Decimal places kept by the integer encoding (0 for non-decimal kinds)."""
        if isinstance(self.rule, NumericRule | DateRule):
            return self.rule.scale
        return 0


def _range_check(value: float | Decimal, minimum: float | None, maximum: float | None) -> None:
    if minimum is not None and value < minimum:
        raise InvalidValue("below minimum", f"min {minimum:g}")
    if maximum is not None and value > maximum:
        raise InvalidValue("above maximum", f"max {maximum:g}")


def encodable(scale: int) -> int:
    """The largest magnitude a numeric column of ``scale`` encodes in 64 bits
    (``value * 10^scale``, DESIGN.md section 4)."""
    power: int = 10**scale
    return INT64_MAX // power


def _width_check(value: float | Decimal, scale: int) -> None:
    widest = encodable(scale)
    if value > widest:
        raise InvalidValue("above maximum", f"64-bit range at scale {scale}")
    if value < -widest:
        raise InvalidValue("below minimum", f"64-bit range at scale {scale}")


def number(raw: Any) -> float | int | Decimal:
    """A finite number from a JSON number, a Decimal or a numeric string.

    A Decimal stays one: it is how a FHIR decimal keeps its written digits (``parse_float=
    Decimal``) and how the ViewDefinitions give computed decimals, and the encoder scales it
    exactly.
    """
    if isinstance(raw, bool):
        raise InvalidValue("not a number", TYPE_RULES["number"])
    if isinstance(raw, int | float):
        value: float | int | Decimal = raw
    elif isinstance(raw, Decimal):
        if not raw.is_finite():
            raise InvalidValue("not finite", TYPE_RULES["number"])
        value = raw
    elif isinstance(raw, str):
        try:
            value = int(raw) if raw.strip().lstrip("+-").isdigit() else float(raw)
        except ValueError:
            raise InvalidValue("not a number", TYPE_RULES["number"]) from None
    else:
        raise InvalidValue("not a number", TYPE_RULES["number"])
    if isinstance(value, float) and not math.isfinite(value):
        raise InvalidValue("not finite", TYPE_RULES["number"])
    return value


def to_date(raw: Any) -> dt.date:
    """The calendar date of a FHIR ``date``/``dateTime``/``instant`` string (local part), or
    of a SQL date or timestamp."""
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if not isinstance(raw, str) or len(raw) < 10:
        raise InvalidValue("not a date", TYPE_RULES["date"])
    try:
        return dt.date.fromisoformat(raw[:10])
    except ValueError:
        raise InvalidValue("not a date", TYPE_RULES["date"]) from None


def completed_years(start: dt.date, end: dt.date) -> int:
    """Whole calendar years from ``start`` to ``end`` (age at ``end`` for a birth date)."""
    years = end.year - start.year
    if (end.month, end.day) < (start.month, start.day):
        years -= 1
    return years


def date_offset(rule: DateRule, value: dt.date, origin: dt.date) -> float | int:
    """``value - origin`` (``since``) or ``origin - value`` (``until``) in the rule's unit."""
    start, end = (origin, value) if rule.since is not None else (value, origin)
    if rule.unit is DateUnit.YEARS:
        return completed_years(start, end)
    days = (end - start).days
    if rule.unit is DateUnit.DAYS:
        return days
    months = round(days / DAYS_PER_MONTH, rule.scale)
    return int(months) if rule.scale == 0 else months


def coerce(spec: ColumnSpec, raw: Any, typed_row: dict[str, Any],
           dates: dict[str, dt.date]) -> Any:
    """Typed value of ``raw`` for ``spec`` (``None`` when missing) or :class:`InvalidValue`.

    ``typed_row`` holds the already coerced earlier columns of the row (for ``bins``) and
    ``dates`` their calendar dates (for date origins); the date of this column is added.
    """
    if isinstance(raw, InvalidValue):
        raise raw
    rule = spec.rule
    if isinstance(rule, CategoricalRule) and rule.bins is not None:
        return _bin(rule, typed_row.get(rule.bins.column))
    if raw is None:
        return None
    if spec.kind is ColumnKind.PATIENT_KEY:
        return str(raw)
    if isinstance(rule, NumericRule):
        value = number(raw)
        _range_check(value, rule.minimum, rule.maximum)
        _width_check(value, rule.scale)
        return value
    if isinstance(rule, CategoricalRule):
        return _level(rule, raw)
    if isinstance(rule, BooleanRule):
        return to_bool(rule, raw)
    if isinstance(rule, DateRule):
        return _date(spec, rule, raw, dates)
    raise InvalidValue("unsupported", f"kind {spec.kind.value}")  # pragma: no cover


def to_bool(rule: BooleanRule, raw: Any) -> bool:
    """True/false from a boolean source (or an already aggregated flag) or a code set."""
    if isinstance(raw, bool):
        return raw
    if rule.matches_codes:
        if not isinstance(raw, str):
            raise InvalidValue("not a code", TYPE_RULES["text code"])
        return bool(raw in rule.codes or raw.startswith(rule.prefixes))
    if raw == "true" or raw == "false":
        return bool(raw == "true")
    raise InvalidValue("not a boolean", TYPE_RULES["boolean"])


def _level(rule: CategoricalRule, raw: Any) -> str:
    if isinstance(raw, bool) or not isinstance(raw, str | int | float | Decimal):
        raise InvalidValue("not a code", TYPE_RULES["code"])
    code = str(raw)
    level = rule.value_map.get(code, code)
    if level in rule.levels:
        return level
    if rule.other is not None:
        return rule.other
    raise InvalidValue("unknown level", "categorical: closed list of levels, no 'other'")


def _bin(rule: CategoricalRule, value: Any) -> str | None:
    if value is None:
        return None
    assert rule.bins is not None
    index = sum(1 for edge in rule.bins.edges if value >= edge)
    return rule.levels[index]


def _date(spec: ColumnSpec, rule: DateRule, raw: Any, dates: dict[str, dt.date]) -> Any:
    value = to_date(raw)
    dates[spec.name] = value
    anchor = rule.since or rule.until
    assert anchor is not None
    origin = anchor.date if anchor.date is not None else dates.get(anchor.column or "")
    if origin is None:
        return None
    offset = date_offset(rule, value, origin)
    _range_check(offset, rule.minimum, rule.maximum)
    return offset
