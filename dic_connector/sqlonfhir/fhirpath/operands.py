"""Operands at run time in the compiled tier: singletons, FHIR decimals, equality by kind.

An operator or a function that takes one value (``-x``, ``not()``, ``<``, ``+``) takes its
operand as a singleton collection (http://hl7.org/fhirpath/N1/#singleton-evaluation-of-collections):
empty stays empty, more than one item is an error. A FHIR decimal arrives as a
:class:`~decimal.Decimal` (resources parsed with ``json.loads(..., parse_float=Decimal)``) or
as a float; the helpers here make both compare and compute as FHIRPath says, the way
fhirpathpy takes every float. These run per row, inside the closures the handler modules
build; :mod:`.functions` holds the semantics both tiers share (date/time, boundaries, keys).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath.env import Collection
from dic_connector.sqlonfhir.fhirpath.functions import temporal_equal


def singleton(values: Collection) -> Any:
    """The one item of a collection, None if empty; FhirPathError for more than one."""
    if not values:
        return None
    if len(values) > 1:
        raise FhirPathError("expected a single item, got a collection", "single item")
    return values[0]


def to_decimal(value: Any) -> Decimal:
    """A number as a Decimal: a float by its shortest repr (``0.1`` is ``Decimal('0.1')``)."""
    if type(value) is Decimal:
        return value
    if type(value) is int:
        return Decimal(value)
    try:
        return Decimal(repr(value) if type(value) is float else str(value))
    except InvalidOperation as exc:  # a string or boolean where arithmetic needs a number
        raise FhirPathError("not a number", "number") from exc


def comparable_numbers(left: Any, right: Any) -> tuple[Any, Any]:
    """Two numbers that Python compares as FHIRPath does.

    A FHIR decimal is a :class:`~decimal.Decimal` when parsed with its written digits
    (``json.loads(..., parse_float=Decimal)``) and a float otherwise; Python compares a Decimal
    with a float by the float's binary value (``Decimal('0.1') != 0.1``), so a float meeting a
    Decimal is taken by its shortest repr, as fhirpathpy takes every float.
    """
    if type(left) is float and type(right) is Decimal:
        return to_decimal(left), right
    if type(left) is Decimal and type(right) is float:
        return left, to_decimal(right)
    return left, right


def number_equal(left: Any, right: Any) -> bool:
    """FHIRPath ``=`` on two numbers (see :func:`comparable_numbers`)."""
    x, y = comparable_numbers(left, right)
    return bool(x == y)


def equal_items(left: Any, right: Any, kind: str) -> bool | None:
    """FHIRPath ``=`` on two single items of the same comparison kind."""
    if kind in ("date", "dateTime", "time"):
        return temporal_equal(left, right, kind == "time")
    if kind == "number":
        return number_equal(left, right)
    return bool(left == right)
