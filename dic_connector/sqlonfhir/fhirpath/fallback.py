"""The general tier: fhirpathpy (FHIR R4 model) for expressions the compiler does not take.

fhirpathpy (https://github.com/beda-software/fhirpath-py) implements all of FHIRPath N1 but
walks its ANTLR tree and wraps every value in a node object on each evaluation, which makes it
20-100x slower than the closures of :mod:`.compiler`. We parse once per expression and call
its evaluator directly (the body of ``fhirpathpy.apply_parsed_path``) so that we can:

- give the input items their FHIR type path (``ResourceNode.create_node(item, path)``), which
  fhirpathpy needs to resolve choice elements below the resource root (``answer.value``);
- add the SQL-on-FHIR functions ``getResourceKey``, ``getReferenceKey``, ``lowBoundary`` and
  ``highBoundary``, and replace ``extension(url)``, which in fhirpathpy 2.2 returns only the
  first matching extension where FHIR says all of them;
- compare date, dateTime, instant and time elements read from the resource as dates, not as
  strings: fhirpathpy 2.2 does so only for literals and computed values, so ``value = effective``
  on ``'1970'`` and ``'1970-06'`` gave ``false`` and ``<`` compared the text, where FHIRPath N1
  (sections 6.1.1 and 6.2) says values of different precision compare as empty.

Results are converted back to plain JSON values: values read from the resource as they were
parsed (a FHIR decimal as a Decimal or a float), computed dates as strings, computed decimals
as :class:`~decimal.Decimal`, as the compiled tier gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

import fhirpathpy.engine
import fhirpathpy.engine.util
import fhirpathpy.parser
from fhirpathpy.engine.invocations import equality as fhirpathpy_equality
from fhirpathpy.engine.invocations.constants import constants as fhirpathpy_clock
from fhirpathpy.engine.nodes import FP_DateTime, FP_Time, FP_Type, ResourceNode
from fhirpathpy.models import models

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env
from dic_connector.sqlonfhir.fhirpath.functions import (
    boundary,
    reference_key,
    resource_key,
    runtime_kind,
)

_MODEL: dict[str, Any] = models["r4"]
# fhirpathpy's functions carry no annotations; these typed aliases keep mypy --strict quiet.
do_eval: Callable[[dict[str, Any], list[Any], Any], Any] = fhirpathpy.engine.do_eval
get_data: Callable[[Any], Any] = fhirpathpy.engine.util.get_data
fhirpathpy_parse: Callable[[str], dict[str, Any]] = fhirpathpy.parser.parse
make_node: Callable[[Any, str | None], Any] = ResourceNode.create_node
make_datetime: Callable[[str], Any] = FP_DateTime
make_time: Callable[[str], Any] = FP_Time
reset_clock: Callable[[], None] = fhirpathpy_clock.reset


def _declared_type(node: Any) -> str | None:
    if isinstance(node, ResourceNode):
        info = getattr(node, "get_type_info")()  # noqa: B009 (untyped method)
        return None if info is None else str(info.name)
    if isinstance(node, FP_Type):
        name = type(node).__name__
        return {"FP_DateTime": "dateTime", "FP_Time": "time"}.get(name)
    return None


def _plain(value: Any) -> Any:
    # a value read from the resource comes back as it was parsed (a float stays a float,
    # while ``get_data`` would make it a Decimal); a computed decimal stays a Decimal
    if isinstance(value, ResourceNode) and type(value.data) in (float, Decimal):
        return value.data
    if type(value) is float:
        return value
    data = get_data(value)
    if isinstance(data, FP_Type):
        return str(getattr(data, "asStr", data))
    if isinstance(data, Decimal):
        return int(data) if data == data.to_integral_value() and "." not in str(data) \
            else data
    if isinstance(data, dict | list):
        return _copy(data)
    return data


def _copy(data: Any) -> Any:
    """A copy of JSON data from the resource, values as parsed."""
    if isinstance(data, dict):
        return {key: _copy(item) for key, item in data.items()}
    if isinstance(data, list):
        return [_copy(item) for item in data]
    return data


def _extension(ctx: Any, data: list[Any], url: str) -> list[Any]:
    out: list[Any] = []
    for item in data:
        element = get_data(item)
        if isinstance(element, Mapping):
            for ext in element.get("extension") or ():
                if isinstance(ext, Mapping) and ext.get("url") == url:
                    out.append(make_node(ext, "Extension"))
    return out


def _resource_key(ctx: Any, data: list[Any]) -> list[Any]:
    keys = (resource_key(get_data(item)) for item in data)
    return [key for key in keys if key is not None]


def _reference_key(ctx: Any, data: list[Any], type_info: Any = None) -> list[Any]:
    wanted = None if type_info is None else str(type_info.name)
    keys = (reference_key(get_data(item), wanted) for item in data)
    return [key for key in keys if key is not None]


def _boundary_of(high: bool) -> Any:
    def run(ctx: Any, data: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in data:
            declared = _declared_type(item)
            value = _plain(item)
            if isinstance(item, FP_Type) and declared == "dateTime" and "T" not in value:
                declared = "date"
            value_kind = runtime_kind(value, declared)
            result = boundary(value, value_kind, high) if value_kind else None
            if result is None:
                continue
            if value_kind in ("date", "dateTime"):
                result = make_datetime(result)
            elif value_kind == "time":
                result = make_time(result)
            else:
                result = Decimal(str(result))
            out.append(result)
        return out

    return run


_TEMPORAL_TYPES = {"date": make_datetime, "dateTime": make_datetime, "instant": make_datetime,
                   "time": make_time}


def _temporal(operand: list[Any]) -> list[Any]:
    """``operand`` with a date or time element of the resource as fhirpathpy's date value."""
    if len(operand) != 1 or not isinstance(operand[0], ResourceNode):
        return operand
    make = _TEMPORAL_TYPES.get(_declared_type(operand[0]) or "")
    value = operand[0].data
    if make is None or not isinstance(value, str):
        return operand
    converted = make(value)
    return operand if converted is None else [converted]


def _typed_operator(operator: Callable[[Any, list[Any], list[Any]], list[Any]]) -> Any:
    def run(ctx: Any, left: list[Any], right: list[Any]) -> list[Any]:
        return operator(ctx, _temporal(left), _temporal(right))

    return run


_OPERATORS = {"=": fhirpathpy_equality.equal, "!=": fhirpathpy_equality.unequal,
              "<": fhirpathpy_equality.lt, ">": fhirpathpy_equality.gt,
              "<=": fhirpathpy_equality.lte, ">=": fhirpathpy_equality.gte}

_FUNCTIONS: dict[str, dict[str, Any]] = {
    **{symbol: {"fn": _typed_operator(operator), "arity": {2: ["Any", "Any"]},
                "nullable": True}
       for symbol, operator in _OPERATORS.items()},
    "extension": {"fn": _extension, "arity": {1: ["String"]}},
    "getResourceKey": {"fn": _resource_key, "arity": {0: []}},
    "getReferenceKey": {"fn": _reference_key, "arity": {0: [], 1: ["TypeSpecifier"]}},
    "lowBoundary": {"fn": _boundary_of(False), "arity": {0: []}},
    "highBoundary": {"fn": _boundary_of(True), "arity": {0: []}},
}


def typed_constant(values: Collection, fhir_type: str | None) -> Collection:
    """A constant as fhirpathpy must see it to compare dates as dates, not as strings."""
    if fhir_type in ("date", "dateTime", "instant"):
        return [make_datetime(v) if isinstance(v, str) else v for v in values]
    if fhir_type == "time":
        return [make_time(v) if isinstance(v, str) else v for v in values]
    return [Decimal(str(v)) if isinstance(v, float) else v for v in values]


class FallbackExpression:
    """One expression parsed once by fhirpathpy, evaluated on items of a known type path."""

    __slots__ = ("_constants", "_root", "base_type", "text")

    def __init__(self, text: str, base_type: str | None, constants: Mapping[str, Collection]
                 ) -> None:
        try:
            parsed = fhirpathpy_parse(text)
        except Exception as exc:
            raise FhirPathError(f"cannot parse {text!r}") from exc
        self.text = text
        self.base_type = base_type
        self._root = parsed["children"][0]
        # Single values go in unwrapped: fhirpathpy hands out a list variable itself, and its
        # unary minus negates in place, so ``%n + -%n`` would change %n mid-expression.
        self._constants: dict[str, Any] = {
            name: value[0] if len(value) == 1 else list(value)
            for name, value in constants.items()
        }

    def __call__(self, focus: Collection, env: Env) -> Collection:
        reset_clock()
        # Resources go in as they are: fhirpathpy's ``Patient.name`` filters the root by
        # ``x["resourceType"]``, which a ResourceNode does not support.
        data_root = [
            item if isinstance(item, dict) and "resourceType" in item
            else make_node(item, self.base_type)
            for item in focus
        ]
        variables: dict[str, Any] = {
            "context": env.resource, "resource": env.resource, "rootResource": env.resource,
            "ucum": "http://unitsofmeasure.org", "rowIndex": env.row_index,
        }
        variables.update(self._constants)
        ctx = {"dataRoot": data_root, "vars": variables, "model": _MODEL,
               "userInvocationTable": _FUNCTIONS, "$this": data_root}
        try:
            result = do_eval(ctx, data_root, self._root)
        except FhirPathError:
            raise
        except Exception as exc:
            raise FhirPathError(f"fhirpathpy failed on {self.text!r}: "
                                f"{type(exc).__name__}") from exc
        out: Collection = []
        for item in result if isinstance(result, list) else [result]:
            value = _plain(item)
            if isinstance(value, dict) and list(value) == ["extension"]:
                continue
            out.append(value)
        return out
