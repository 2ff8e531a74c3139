"""The order of ``order_by`` values: which row is a patient's ``first`` or ``last``.

``aggregate: first|last`` takes the value of the earliest or latest row by the column's
``order_by`` (:mod:`.columns`). Those keys are numbers or FHIR ``date``/``dateTime`` values
(strings, or :class:`datetime.date`/:class:`datetime.datetime` from a SQL source, read by
their ISO 8601 form), and dates are ordered as *instants*, not as strings: a BMI measured at
``10:00:00+02:00`` (08:00Z) is earlier than one at ``09:00:00Z``.

Comparison follows FHIRPath (http://hl7.org/fhirpath/#datetime-equality and
#comparison): two values are compared component by component down to the coarser of their
precisions; if they agree that far and the precisions differ, they are *incomparable*
(``2024`` vs ``2024-03-01``), while ``2023`` vs ``2024-03-01`` is simply earlier. Seconds
and their fraction are one precision. Which components:

- both with a time of day and a zone (what FHIR requires of a dateTime with a time): the
  instant in UTC (:func:`~dic_connector.sqlonfhir.fhirpath.functions.datetime_parts`);
- one a date (or year, year-month), which FHIR gives no zone: the calendar date as written,
  i.e. the dateTime's *local* date. ``2024-03-01`` vs ``2024-03-01T23:30:00-02:00`` is a
  day against an instant within it: incomparable; against ``2024-03-02T00:30:00+00:00``
  it is earlier;
- both with a time but neither with a zone (not valid FHIR, but a SQL ``timestamp``):
  the local times as written; a time without a zone against one with a zone: only their
  calendar dates (equal dates are incomparable).

The winner is the value comparable with every other value of the patient and not beaten by
any (equal values: the first row for ``first``, the last for ``last``, as a stable sort
does). When an incomparable pair decides it (no such value exists), the patient's value is
:class:`~.columns.InvalidValue` ``not comparable`` naming the ``order_by`` column, which
validation rejects under the column's ``on_invalid`` policy: never a guess. Pairs that do
not decide the winner may be incomparable. A string that is not a FHIR date/dateTime is
``not a date``; numbers order numerically; numbers mixed with dates are ``not comparable``.
A patient with one ordered row needs no comparison and takes its value.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from dic_connector.mapping.columns import InvalidValue
from dic_connector.sqlonfhir.fhirpath.functions import Components, datetime_parts

#: (components compared, mode): mode "utc" (zoned instant), "time" (a time without zone),
#: "date" (a date of any precision)
Key = tuple[Components, str, Components]


def pick(pairs: Sequence[tuple[Any, Any]], last: bool, column: str) -> Any:
    """The value of the first (or ``last``) of ``(order key, value)`` pairs, in row order.

    ``column`` names the ``order_by`` column in an :class:`~.columns.InvalidValue`.
    """
    if len(pairs) == 1:
        return pairs[0][1]
    keys = [p[0] for p in pairs]
    if all(_is_number(k) for k in keys):
        return _extreme(keys, pairs, last)
    if any(_is_number(k) for k in keys):
        return InvalidValue("not comparable", f"order_by {column!r}")
    parsed: list[Key] = []
    for k in keys:
        key = temporal_key(k)
        if key is None:
            return InvalidValue("not a date",
                                f"type: FHIR date or dateTime (order_by {column!r})")
        parsed.append(key)
    first = parsed[0]
    if all(p[1] == first[1] and len(p[0]) == len(first[0]) for p in parsed):
        return _extreme([p[0] for p in parsed], pairs, last)  # one precision: a total order
    candidates = range(len(parsed) - 1, -1, -1) if last else range(len(parsed))
    beaten = 1 if last else -1  # compare(other, winner) must never be this
    for i in candidates:
        if all(j == i or compare(parsed[j], parsed[i]) not in (None, beaten)
               for j in range(len(parsed))):
            return pairs[i][1]
    return InvalidValue("not comparable", f"order_by {column!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | Decimal) and not isinstance(value, bool)


def _extreme(keys: Sequence[Any], pairs: Sequence[tuple[Any, Any]], last: bool) -> Any:
    """Value at the smallest key (the first such row) or the largest (the last such row)."""
    best = 0
    for i in range(1, len(keys)):
        if (keys[i] >= keys[best]) if last else (keys[i] < keys[best]):
            best = i
    return pairs[best][1]


def temporal_key(value: Any) -> Key | None:
    """``(compared components, mode, written components)`` of a date/dateTime; None if not one."""
    if isinstance(value, dt.date):  # datetime is a date too
        value = value.isoformat()
    if not isinstance(value, str):
        return None
    parts = datetime_parts(value)
    if parts is None:
        return None
    written, utc = parts
    if utc is not None:
        return utc, "utc", written
    return written, ("time" if len(written) > 3 else "date"), written


def compare(a: Key, b: Key) -> int | None:
    """-1/0/1 as ``a`` is before, with, after ``b``; None when they are incomparable."""
    (a_parts, a_mode, a_written), (b_parts, b_mode, b_written) = a, b
    if a_mode == b_mode or "date" in (a_mode, b_mode):
        if a_mode != b_mode:  # a date against a time of day: the dates as written
            a_parts, b_parts = a_written, b_written
        for x, y in zip(a_parts, b_parts, strict=False):
            if x != y:
                return -1 if x < y else 1
        return 0 if len(a_parts) == len(b_parts) else None
    for x, y in zip(a_written[:3], b_written[:3], strict=True):  # zoned vs unzoned time
        if x != y:
            return -1 if x < y else 1
    return None
