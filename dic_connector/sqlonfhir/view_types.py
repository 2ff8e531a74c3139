"""Column types of a ViewDefinition: the declared ``type`` checked against what a path gives.

SQL-on-FHIR v2 (https://sql-on-fhir.org/ig/latest/StructureDefinition-ViewDefinition.html,
``ViewDefinition.select.column.type`` and "Column Types"): ``type`` names the FHIR type of the
column's values, a StructureDefinition URI where a relative one (``string``, ``HumanName``,
``Observation.referenceRange``) stands for ``http://hl7.org/fhir/StructureDefinition/<type>``.
It must be given when the column is of a non-primitive type, and implementations should report
an error when a value is not of the declared type, or is non-primitive while no type is
declared. The specification asks for no conversion (how a type is stored is the runner's
business), so values are checked, never cast.

The check is made once, at compile time, whenever the compiler knows the static type of the
path (:mod:`.fhirpath.types`): compatible, the column costs nothing at run time; incompatible,
the view is rejected. Only paths of unknown static type are checked value by value
(:func:`value_check`). Compatibility follows FHIR and FHIRPath:

- the string family (``string code id markdown uri url canonical oid uuid base64Binary
  xhtml``) is one group: a ``code`` is a string, and FHIRPath's ``System.String`` (what
  ``join()``, ``getResourceKey()`` or a literal give) carries no finer type;
- ``integer positiveInt unsignedInt integer64`` are integers, and an integer is a valid
  ``decimal`` (FHIRPath converts Integer to Decimal implicitly);
- a ``date`` is a valid ``dateTime`` (implicit Date to DateTime conversion), ``instant`` and
  ``dateTime`` are one group; ``time`` and ``boolean`` stand alone;
- a complex type matches itself and its ancestors (``Age`` is a ``Quantity``).

Run time errors name the column's ``type`` element, never the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from dic_connector.errors import ViewDefinitionError
from dic_connector.sqlonfhir.fhirpath import types

PREFIX = "http://hl7.org/fhir/StructureDefinition/"

_GROUPS: dict[str, str] = {
    **{name: "string" for name in ("string", "code", "id", "markdown", "uri", "url",
                                   "canonical", "oid", "uuid", "base64Binary", "xhtml",
                                   "System.String")},
    **{name: "integer" for name in ("integer", "positiveInt", "unsignedInt", "integer64",
                                    "System.Integer")},
    "decimal": "decimal", "System.Decimal": "decimal",
    "boolean": "boolean", "System.Boolean": "boolean",
    "date": "date", "System.Date": "date",
    "dateTime": "dateTime", "instant": "dateTime", "System.DateTime": "dateTime",
    "time": "time", "System.Time": "time",
}
#: (value group, declared group) pairs where a value is valid though the groups differ
_WIDENING = frozenset({("integer", "decimal"), ("date", "dateTime")})

_DATE = re.compile(r"\d{4}(-\d{2}(-\d{2})?)?")
_DATETIME = re.compile(r"\d{4}(-\d{2}(-\d{2}(T\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?"
                       r"(Z|[+-]\d{2}:\d{2})?)?)?)?")
_TIME = re.compile(r"\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?")


def declared_type(raw: Any, path: str) -> str:
    """The FHIR type named by a column's ``type``; ViewDefinitionError if there is none such."""
    if not isinstance(raw, str) or not raw:
        raise ViewDefinitionError("must be a FHIR type name or StructureDefinition URI", path)
    name = raw[len(PREFIX):] if raw.startswith(PREFIX) else raw
    if name in _GROUPS and not name.startswith("System."):
        return name
    if types.is_known_type(name):
        return name
    raise ViewDefinitionError(f"unknown FHIR type {raw!r}", path)


def primitive(type_name: str) -> bool:
    """True for a FHIR primitive or System type."""
    return type_name in _GROUPS


def compatible(static: str | None, declared: str | None) -> bool | None:
    """Whether values of static type ``static`` suit a column declaring ``declared``.

    True: always (no run-time check); False: never (the view is rejected); None: the static
    type is unknown or too coarse (``System.String`` for a date column), check each value.
    ``declared=None`` (no ``type`` given) accepts any primitive type.
    """
    if static is None:
        return None
    if declared is None:
        return primitive(static)
    if primitive(static) != primitive(declared):
        return False
    if not primitive(static):
        return declared in types.ancestors(static)
    value_group, column_group = _GROUPS[static], _GROUPS[declared]
    if value_group == column_group or (value_group, column_group) in _WIDENING:
        return True
    if static == "System.String" and column_group in ("date", "dateTime", "time"):
        return None
    return False


def _is_string(value: Any) -> bool:
    return type(value) is str


def _is_integer(value: Any) -> bool:
    return type(value) is int


def _is_decimal(value: Any) -> bool:
    return type(value) in (int, float, Decimal)


def _is_boolean(value: Any) -> bool:
    return type(value) is bool


def _is_complex(value: Any) -> bool:
    return type(value) is dict


def _is_primitive(value: Any) -> bool:
    return type(value) is not dict


def _matching(pattern: re.Pattern[str]) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return type(value) is str and pattern.fullmatch(value) is not None

    return check


def value_check(declared: str | None) -> Callable[[Any], bool]:
    """The run-time test of one (non-null) value for a column declaring ``declared``."""
    if declared is None:
        return _is_primitive
    if declared == "positiveInt":
        return lambda value: type(value) is int and value > 0
    if declared == "unsignedInt":
        return lambda value: type(value) is int and value >= 0
    group = _GROUPS.get(declared)
    checks: dict[str | None, Callable[[Any], bool]] = {
        "string": _is_string, "integer": _is_integer, "decimal": _is_decimal,
        "boolean": _is_boolean, "date": _matching(_DATE), "dateTime": _matching(_DATETIME),
        "time": _matching(_TIME), None: _is_complex,
    }
    return checks[group]


def describe(declared: str | None) -> str:
    """How an error names the column's type."""
    return "a primitive type (no 'type' declared)" if declared is None else repr(declared)
