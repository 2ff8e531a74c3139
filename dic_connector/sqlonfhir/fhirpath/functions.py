"""Value semantics shared by both tiers: temporal comparison, boundaries, resource keys.

- Date/time comparison with partial precision (http://hl7.org/fhirpath/N1/#datetime-equality
  and #comparison): values are compared component by component down to the coarser of the two
  precisions; if they agree that far but the precisions differ, the result is empty (None).
  Seconds and milliseconds count as one precision. A value without a timezone is taken as UTC,
  as fhirpathpy does.
- ``lowBoundary()``/``highBoundary()`` (FHIRPath 3.0 draft,
  https://build.fhir.org/ig/HL7/FHIRPath/#lowboundaryprecision-integer-decimal--date--datetime--time):
  the least and greatest value the input could stand for given its precision; a dateTime with
  no timezone ranges over +14:00 (low) to -12:00 (high). A decimal's precision is its number of
  written decimal places, which only a :class:`~decimal.Decimal` keeps (``1.50``); the result is
  a Decimal.
- ``getResourceKey()``/``getReferenceKey([type])`` (SQL-on-FHIR v2,
  https://sql-on-fhir.org/ig/latest/StructureDefinition-ViewDefinition.html#required-additional-functions):
  we use the logical id as the key, and the id part of a reference (relative, absolute or
  ``urn:uuid:``), so the two compare equal when a reference points at a resource.
"""

from __future__ import annotations

import calendar
import re
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

_DATETIME = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_TIME = re.compile(r"(\d{2})(?::(\d{2})(?::(\d{2})(?:\.(\d+))?)?)?$")
#: a date/time cut at its precision: year, month, day, hour, minute, Decimal seconds
Components = tuple[Decimal | int, ...]


def _tz_minutes(tz: str | None) -> int:
    if tz is None or tz == "Z":
        return 0
    sign = -1 if tz[0] == "-" else 1
    return sign * (int(tz[1:3]) * 60 + int(tz[4:6]))


def datetime_parts(text: str) -> tuple[Components, Components | None] | None:
    """A date/dateTime's components down to its precision, as written and as a UTC instant.

    ``(written, utc)``: ``written`` is (year, month, day, hour, minute, second) cut at the
    value's precision, in its own offset, seconds a Decimal with the fraction; ``utc`` is the
    same precision shifted to UTC when the value has a time of day *and* a zone, else None
    (a date has no zone; a time without one is local to an unknown place). None when
    ``text`` is not a FHIR date/dateTime (or names no real instant: ``2024-02-30T10:00Z``).
    """
    match = _DATETIME.match(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, tz = match.groups()
    parts: list[Any] = [int(year)]
    for item in (month, day):
        if item is None:
            return tuple(parts), None
        parts.append(int(item))
    if hour is None:
        return tuple(parts), None
    written = [*parts, int(hour)]
    if minute is not None:
        written.append(int(minute))
    if second is not None:
        written.append(Decimal(f"{second}.{fraction or '0'}"))
    if tz is None:
        return tuple(written), None
    try:
        moment = datetime(parts[0], parts[1], parts[2], int(hour), int(minute or 0))
        moment -= timedelta(minutes=_tz_minutes(tz))
    except (ValueError, OverflowError):  # no such day or hour, or before year 1 in UTC
        return None
    utc: list[Any] = [moment.year, moment.month, moment.day, moment.hour]
    if minute is not None:
        utc.append(moment.minute)
    if second is not None:
        utc.append(written[5])
    return tuple(written), tuple(utc)


def _date_parts(text: str) -> Components | None:
    """Components for comparison: in UTC, a time without a zone taken as UTC (fhirpathpy)."""
    parts = datetime_parts(text)
    if parts is None:
        return None
    written, utc = parts
    return written if utc is None else utc


def _time_parts(text: str) -> tuple[Decimal | int, ...] | None:
    match = _TIME.match(text)
    if match is None:
        return None
    hour, minute, second, fraction = match.groups()
    parts: list[Decimal | int] = [int(hour)]
    if minute is not None:
        parts.append(int(minute))
    if second is not None:
        parts.append(Decimal(f"{second}.{fraction or '0'}"))
    return tuple(parts)


def temporal_compare(left: str, right: str, is_time: bool) -> int | None:
    """-1/0/1 ordering of two date/dateTime (or time) strings; None when precision decides."""
    parse = _time_parts if is_time else _date_parts
    a, b = parse(left), parse(right)
    if a is None or b is None:
        return None
    for x, y in zip(a, b, strict=False):
        if x != y:
            return -1 if x < y else 1
    return 0 if len(a) == len(b) else None


def temporal_equal(left: str, right: str, is_time: bool) -> bool | None:
    """FHIRPath ``=`` on two date/time strings: None when precision decides.

    As in fhirpathpy, a dateTime with a time of day never equals a date-only value (false,
    not empty).
    """
    order = temporal_compare(left, right, is_time)
    if order is not None:
        return order == 0
    if not is_time and ("T" in left) != ("T" in right):
        a, b = _date_parts(left), _date_parts(right)
        if a is not None and b is not None and (len(a) > 3) != (len(b) > 3):
            return False
    return None


def _decimal_boundary(value: int | float | Decimal, high: bool) -> Decimal:
    """Half a unit of the last written digit away: ``1.50`` -> 1.495 / 1.505, ``2`` -> 1.5 / 2.5.

    The written digits are those of a Decimal (parsed with ``parse_float=Decimal``); a float
    only has its shortest repr (``1.50`` parsed as a float is ``1.5``, precision 1).
    """
    number = value if isinstance(value, Decimal) else Decimal(repr(value))
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
    return number + half if high else number - half


def _date_boundary(text: str, high: bool) -> str | None:
    match = _DATETIME.match(text)
    if match is None or "T" in text:
        return None
    year = int(match.group(1))
    month = int(match.group(2) or (12 if high else 1))
    last = calendar.monthrange(year, month)[1]
    day = int(match.group(3) or (last if high else 1))
    return f"{year:04d}-{month:02d}-{day:02d}"


def _datetime_boundary(text: str, high: bool) -> str | None:
    match = _DATETIME.match(text)
    if match is None:
        return None
    _, _, _, hour, minute, second, fraction, tz = match.groups()
    date = _date_boundary(text.split("T")[0], high)
    hh = hour or ("23" if high else "00")
    mm = minute or ("59" if high else "00")
    ss = second or ("59" if high else "00")
    ms = (fraction or "")[:3].ljust(3, "9" if high else "0")
    zone = tz or ("-12:00" if high else "+14:00")
    return f"{date}T{hh}:{mm}:{ss}.{ms}{zone}"


def _time_boundary(text: str, high: bool) -> str | None:
    match = _TIME.match(text)
    if match is None:
        return None
    hour, minute, second, fraction = match.groups()
    mm = minute or ("59" if high else "00")
    ss = second or ("59" if high else "00")
    ms = (fraction or "")[:3].ljust(3, "9" if high else "0")
    return f"{hour}:{mm}:{ss}.{ms}"


def boundary(value: Any, value_kind: str, high: bool) -> Any:
    """lowBoundary/highBoundary of one value of kind number/date/dateTime/time; None if n/a."""
    if value_kind == "number" and isinstance(value, int | float | Decimal) \
            and not isinstance(value, bool):
        return _decimal_boundary(value, high)
    if not isinstance(value, str):
        return None
    if value_kind == "date":
        return _date_boundary(value, high)
    if value_kind == "dateTime":
        return _datetime_boundary(value, high)
    if value_kind == "time":
        return _time_boundary(value, high)
    return None


def runtime_kind(value: Any, declared: str | None) -> str | None:
    """Boundary kind of a value given its declared FHIR type (``date``, ``dateTime``...)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        return "number"
    if declared in ("date", "dateTime", "time"):
        return declared
    if declared == "instant":
        return "dateTime"
    return None


def resource_key(resource: Any) -> str | None:
    """getResourceKey(): the resource's logical id."""
    if isinstance(resource, dict) and isinstance(resource.get("id"), str):
        return str(resource["id"])
    return None


def reference_key(reference: Any, type_name: str | None) -> str | None:
    """getReferenceKey([type]): the id a Reference points at, if of ``type_name`` (if given)."""
    if not isinstance(reference, dict):
        return None
    target = reference.get("reference")
    if not isinstance(target, str):
        return None
    # the usual relative reference "Type/id": one slash, checked as the general case does
    slash = target.find("/")
    if slash > 0 and target.find("/", slash + 1) < 0 and ":" not in target:
        ref_type, ref_id = target[:slash], target[slash + 1:]
        if not ref_id or not ref_type.isalpha() or not ref_type[0].isupper():
            return None
        return None if type_name is not None and ref_type != type_name else ref_id
    if target.startswith("urn:uuid:") or target.startswith("urn:oid:"):
        if type_name is not None and reference.get("type") != type_name:
            return None
        return target.rsplit(":", 1)[1]
    parts = target.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    if len(parts) < 2:
        return None
    ref_type, ref_id = parts[-2], parts[-1]
    if not ref_type.isalpha() or not ref_type[0].isupper() or not ref_id:
        return None
    if type_name is not None and ref_type != type_name:
        return None
    return ref_id
