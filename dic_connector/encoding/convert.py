"""Column-at-a-time conversion of raw values to typed values (the hot loop of validation).

:func:`dic_connector.mapping.columns.coerce` states the rules for one value; this module
applies the same rules to a whole column with fast paths for the values that dominate real
data (plain ints, floats and Decimals, codes already in the level list, booleans, repeated
dates), so
validating 10^5 patients costs a few list passes rather than a dispatch per cell. Every
failure is returned as (row position, :class:`InvalidValue`); nothing here raises for bad
data, the caller applies the column's policy.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from dic_connector.mapping.columns import (
    BooleanRule,
    CategoricalRule,
    ColumnKind,
    ColumnSpec,
    DateRule,
    InvalidValue,
    NumericRule,
    coerce,
    date_offset,
    encodable,
    to_date,
)

Failures = list[tuple[int, InvalidValue]]


def _apply(values: Sequence[Any], fast: Callable[[Any], Any], slow: Callable[[Any], Any]
           ) -> tuple[list[Any], Failures]:
    out: list[Any] = []
    failures: Failures = []
    append = out.append
    for pos, raw in enumerate(values):
        try:
            append(fast(raw))
        except (KeyError, TypeError):
            try:
                append(slow(raw))
            except InvalidValue as exc:
                failures.append((pos, exc))
                append(None)
        except InvalidValue as exc:
            failures.append((pos, exc))
            append(None)
    return out, failures


def _slow(spec: ColumnSpec) -> Callable[[Any], Any]:
    def slow(raw: Any) -> Any:
        return coerce(spec, raw, {}, {})
    return slow


def _numeric(spec: ColumnSpec, rule: NumericRule, raws: Sequence[Any]
             ) -> tuple[list[Any], Failures]:
    widest = encodable(rule.scale)  # beyond it the slow path names the 64-bit rule
    lo = -widest if rule.minimum is None else max(rule.minimum, -widest)
    hi = widest if rule.maximum is None else min(rule.maximum, widest)

    def fast(raw: Any) -> Any:
        kind = type(raw)
        if raw is None:
            return None
        if (kind is int or kind is float) and lo <= raw <= hi and raw - raw == 0:
            return raw
        if kind is Decimal and raw.is_finite() and lo <= raw <= hi:
            return raw
        raise KeyError
    return _apply(raws, fast, _slow(spec))


def _categorical(spec: ColumnSpec, rule: CategoricalRule, raws: Sequence[Any]
                 ) -> tuple[list[Any], Failures]:
    lookup: dict[Any, Any] = {level: level for level in rule.levels}
    lookup.update(rule.value_map)
    lookup[None] = None
    return _apply(raws, lookup.__getitem__, _slow(spec))


def _boolean(spec: ColumnSpec, raws: Sequence[Any]) -> tuple[list[Any], Failures]:
    def fast(raw: Any) -> Any:
        if raw is None or type(raw) is bool:
            return raw
        raise KeyError
    return _apply(raws, fast, _slow(spec))


def _dates(raws: Sequence[Any]) -> tuple[list[dt.date | None], Failures]:
    cache: dict[Any, dt.date | None] = {None: None}

    def parse(raw: Any) -> dt.date | None:
        if type(raw) is not str:
            raise KeyError
        day = cache[raw[:10]] if raw[:10] in cache else to_date(raw)
        cache[raw[:10]] = day
        return day

    def slow(raw: Any) -> Any:
        if isinstance(raw, InvalidValue):
            raise raw
        return to_date(raw)
    return _apply(raws, lambda raw: cache[raw] if raw is None else parse(raw), slow)


def convert_column(spec: ColumnSpec, raws: Sequence[Any], typed: Mapping[str, list[Any]],
                   dates: dict[str, list[dt.date | None]]) -> tuple[list[Any], Failures]:
    """Typed values of one column and its failures; records a date column's dates."""
    rule = spec.rule
    if isinstance(rule, CategoricalRule) and rule.bins is not None:
        edges, levels = rule.bins.edges, rule.levels
        source = typed[rule.bins.column]
        return [None if v is None else levels[sum(1 for e in edges if v >= e)]
                for v in source], []
    if spec.kind is ColumnKind.PATIENT_KEY:
        return _apply(raws, lambda raw: None if raw is None else str(raw), _slow(spec))
    if isinstance(rule, NumericRule):
        return _numeric(spec, rule, raws)
    if isinstance(rule, CategoricalRule):
        return _categorical(spec, rule, raws)
    if isinstance(rule, BooleanRule):
        return _boolean(spec, raws)
    assert isinstance(rule, DateRule)
    days, failures = _dates(raws)
    dates[spec.name] = days
    anchor = rule.since or rule.until
    assert anchor is not None
    origins: Sequence[dt.date | None] = (
        [anchor.date] * len(days) if anchor.date is not None else dates[anchor.column or ""])
    lo = -math.inf if rule.minimum is None else rule.minimum
    hi = math.inf if rule.maximum is None else rule.maximum
    out: list[Any] = []
    for pos, (day, origin) in enumerate(zip(days, origins, strict=True)):
        if day is None or origin is None:
            out.append(None)
            continue
        offset = date_offset(rule, day, origin)
        if not lo <= offset <= hi:
            failures.append((pos, InvalidValue(
                "below minimum" if offset < lo else "above maximum",
                f"min {rule.minimum:g}" if offset < lo else f"max {rule.maximum:g}")))
            out.append(None)
            continue
        out.append(offset)
    failures.sort(key=lambda f: f[0])
    return out, failures
