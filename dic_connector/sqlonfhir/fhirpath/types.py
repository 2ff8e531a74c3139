"""Static FHIR R4 types for the compiler: what a member name means on a given type.

The compiler tracks, for every sub-expression, the FHIR type of its items: a resource or data
type name (``Patient``, ``HumanName``), a backbone element path (``Patient.contact``), a FHIR
primitive (``date``) or a System type (``System.String``). ``None`` means unknown, and the
compiler then leaves the expression to fhirpathpy.

Type facts come from fhirpathpy's R4 model (generated from the FHIR R4 StructureDefinitions,
https://hl7.org/fhir/R4/): ``path2Type``, ``choiceTypePaths`` (the ``value[x]`` elements, see
https://hl7.org/fhir/R4/formats.html#choice), ``pathsDefinedElsewhere`` (``contentReference``)
and ``type2Parent``. Everything here is derived once at import and is immutable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirpathpy.models import models

_R4: dict[str, Any] = models["r4"]
_PATH2TYPE: dict[str, str] = _R4["path2Type"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
_PARENT: dict[str, str] = _R4["type2Parent"]
_BACKBONES: frozenset[str] = frozenset(
    prefix
    for path in (*_PATH2TYPE, *_CHOICES)
    for prefix in (path.rsplit(".", n)[0] for n in range(1, path.count(".")))
    if "." in prefix
)

STRING_TYPES = frozenset({
    "string", "code", "id", "uri", "url", "canonical", "oid", "uuid", "markdown",
    "base64Binary", "xhtml", "System.String",
})
INTEGER_TYPES = frozenset({"integer", "positiveInt", "unsignedInt", "System.Integer"})
DECIMAL_TYPES = frozenset({"decimal", "System.Decimal"})
BOOLEAN_TYPES = frozenset({"boolean", "System.Boolean"})
DATE_TYPES = frozenset({"date", "System.Date"})
DATETIME_TYPES = frozenset({"dateTime", "instant", "System.DateTime"})
TIME_TYPES = frozenset({"time", "System.Time"})
PRIMITIVE_TYPES = (STRING_TYPES | INTEGER_TYPES | DECIMAL_TYPES | BOOLEAN_TYPES | DATE_TYPES
                   | DATETIME_TYPES | TIME_TYPES)


def kind(type_name: str | None) -> str | None:
    """Comparison kind of a type: string, number, boolean, date, dateTime, time, or None."""
    if type_name is None:
        return None
    for name, group in (("string", STRING_TYPES), ("number", INTEGER_TYPES | DECIMAL_TYPES),
                        ("boolean", BOOLEAN_TYPES), ("date", DATE_TYPES),
                        ("dateTime", DATETIME_TYPES), ("time", TIME_TYPES)):
        if type_name in group:
            return name
    return None


def is_resource_type(name: str) -> bool:
    """True for an R4 resource type name such as ``Patient``."""
    seen = name
    while seen in _PARENT:
        seen = _PARENT[seen]
        if seen in ("Resource", "DomainResource"):
            return True
    return False


def fhir_type_name(choice_suffix: str) -> str:
    """``String`` (suffix of ``valueString``) -> ``string``; ``Quantity`` stays ``Quantity``."""
    lowered = choice_suffix[:1].lower() + choice_suffix[1:]
    return lowered if lowered in PRIMITIVE_TYPES else choice_suffix


@dataclass(frozen=True, slots=True)
class Plain:
    """A member stored under one JSON key, with one type."""

    key: str
    type: str


@dataclass(frozen=True, slots=True)
class Choice:
    """A ``name[x]`` member: JSON keys ``name`` + type suffix, with their FHIR type names."""

    name: str
    options: tuple[tuple[str, str], ...]


def _parents(type_name: str) -> list[str]:
    chain = [type_name]
    current = "BackboneElement" if "." in type_name else type_name
    if current != type_name:
        chain.append(current)
    while current in _PARENT:
        current = _PARENT[current]
        chain.append(current)
    return chain


def member(type_name: str | None, name: str) -> Plain | Choice | None:
    """What ``name`` means on items of ``type_name``; None when the model does not say."""
    if type_name is None or type_name in PRIMITIVE_TYPES:
        return None
    for owner in _parents(type_name):
        path = f"{owner}.{name}"
        if path in _PATH2TYPE:
            return Plain(name, _PATH2TYPE[path])
        if path in _CHOICES:
            options = tuple((name + suffix, fhir_type_name(suffix)) for suffix in _CHOICES[path])
            return Choice(name, options)
        if path in _ELSEWHERE:
            return Plain(name, _ELSEWHERE[path])
        if path in _BACKBONES:
            return Plain(name, path)
    return None


def is_known_type(name: str) -> bool:
    """True for an R4 type name: primitive, data type, resource or backbone element path."""
    return (name in PRIMITIVE_TYPES or name in _PARENT or name in _BACKBONES
            or name in ("Element", "BackboneElement", "Resource"))


def ancestors(type_name: str) -> tuple[str, ...]:
    """``type_name`` and the types it specialises (``Age``: Quantity, Element ...)."""
    return tuple(_parents(type_name))
