"""FHIRPath AST to Python closures, for the subset views use most (the fast tier).

Each AST node becomes a closure ``(focus, env) -> collection`` (see :mod:`.env`) built once,
and a run of navigation steps one generated function (:mod:`.paths`); evaluating a column is
then a few dictionary lookups and list appends, with no tree walk and no per-item wrapper
objects. The compiler tracks the static FHIR type of every sub-expression
(:mod:`.types`), which is what lets it resolve ``value.ofType(Quantity)`` to the JSON key
``valueQuantity`` at compile time and pick number, string or date/time semantics for ``=`` and
``<`` (http://hl7.org/fhirpath/N1/#equality, #comparison).

Whatever the compiler is not sure about (unknown types, mixed-type comparisons, functions not
listed in :data:`FUNCTIONS` of :mod:`.compile_calls`, ``|``, ``is``/``as``...) raises
:class:`Unsupported` and the whole expression goes to fhirpathpy instead (:mod:`.fallback`).
Semantics follow FHIRPath N1 (http://hl7.org/fhirpath/N1/); the property test
``tests/dic_connector/mapping/test_fhirpath_property.py`` checks both tiers agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, Evaluator
from dic_connector.sqlonfhir.fhirpath.functions import temporal_equal


class Unsupported(Exception):
    """The expression is outside the compiled subset; evaluate it with fhirpathpy."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Compile-time bindings: constants (value collection, FHIR type) and the view's resource."""

    constants: Mapping[str, tuple[Collection, str | None]]
    resource_type: str


Compiled = tuple[Evaluator, str | None]
BUILTIN_EXTERNALS = frozenset({"rowIndex", "resource", "rootResource", "context", "ucum"})


def identity(focus: Collection, env: Env) -> Collection:
    return focus


def constant(value: Collection) -> Evaluator:
    def run(focus: Collection, env: Env) -> Collection:
        return list(value)

    return run


def compile_node(node: ast.Node, focus_type: str | None, scope: Scope) -> Compiled:
    """Closure and static result type for ``node`` evaluated on items of ``focus_type``."""
    if isinstance(node, ast.Literal):
        return _literal(node)
    if isinstance(node, ast.Empty):
        return constant([]), None
    if isinstance(node, ast.Variable):
        if node.name != "this":
            raise Unsupported(f"${node.name}")
        return identity, focus_type
    if isinstance(node, ast.External):
        return _external(node.name, scope)
    if isinstance(node, ast.Member):
        # imported here: paths, compile_calls and compile_operators build on this module
        from dic_connector.sqlonfhir.fhirpath.paths import chain, walk

        start, out_type, steps = chain(node, focus_type, scope) or (identity, None, ())
        return walk(start, steps), out_type
    if isinstance(node, ast.Index):
        return _index(node, focus_type, scope)
    if isinstance(node, ast.Call):
        from dic_connector.sqlonfhir.fhirpath.compile_calls import compile_call

        return compile_call(node, focus_type, scope)
    if isinstance(node, ast.Unary):
        return _unary(node, focus_type, scope)
    if isinstance(node, ast.Binary):
        from dic_connector.sqlonfhir.fhirpath.compile_operators import compile_binary

        return compile_binary(node, focus_type, scope)
    raise Unsupported(type(node).__name__)


def compile_base(base: ast.Node | None, focus_type: str | None, scope: Scope) -> Compiled:
    """The input of a member or call: the focus itself when there is no explicit base."""
    if base is None:
        return identity, focus_type
    return compile_node(base, focus_type, scope)


def literal_values(node: ast.Literal) -> Collection:
    """The value of a literal; decimals as :class:`~decimal.Decimal` with their written digits."""
    if node.type in ("System.String", "System.Boolean", "System.Integer", "System.Date",
                     "System.DateTime", "System.Time"):
        return [node.value]
    if node.type == "System.Decimal":
        return [Decimal(str(node.value))]
    raise Unsupported(node.type)


def _literal(node: ast.Literal) -> Compiled:
    return constant(literal_values(node)), node.type


def _external(name: str, scope: Scope) -> Compiled:
    if name == "rowIndex":
        return (lambda focus, env: [env.row_index]), "System.Integer"
    if name in ("resource", "rootResource", "context"):
        return (lambda focus, env: [env.resource]), scope.resource_type
    if name == "ucum":
        return constant(["http://unitsofmeasure.org"]), "System.String"
    if name in scope.constants:
        value, fhir_type = scope.constants[name]
        return constant(value), fhir_type
    raise FhirPathError(f"undefined constant %{name}")


def _index(node: ast.Index, focus_type: str | None, scope: Scope) -> Compiled:
    base_fn, base_type = compile_node(node.base, focus_type, scope)
    if isinstance(node.index, ast.Literal) and node.index.type == "System.Integer":
        position = node.index.value
    elif isinstance(node.index, ast.External) and node.index.name in scope.constants:
        value, _ = scope.constants[node.index.name]
        position = value[0] if len(value) == 1 else None
    else:
        raise Unsupported("computed index")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        raise Unsupported("index is not a non-negative integer")

    def run(focus: Collection, env: Env) -> Collection:
        items = base_fn(focus, env)
        return [items[position]] if position < len(items) else []

    return run, base_type


def _unary(node: ast.Unary, focus_type: str | None, scope: Scope) -> Compiled:
    operand_fn, operand_type = compile_node(node.operand, focus_type, scope)
    if types.kind(operand_type) != "number":
        raise Unsupported("unary sign on a non-number")
    if node.op == "+":
        return operand_fn, operand_type

    def negate(focus: Collection, env: Env) -> Collection:
        value = singleton(operand_fn(focus, env))
        return [] if value is None else [-value]

    return negate, operand_type


def constant_value(node: ast.Node, scope: Scope) -> Collection | None:
    """The value of a literal or ``%constant`` node known at compile time, else None."""
    if isinstance(node, ast.Literal) and node.type in (
            "System.String", "System.Boolean", "System.Integer", "System.Decimal"):
        return literal_values(node)
    if isinstance(node, ast.External) and node.name in scope.constants:
        return list(scope.constants[node.name][0])
    return None


def type_argument(node: ast.Node) -> str:
    """The type name in ``ofType(X)``, ``ofType(FHIR.X)``; Unsupported for anything else."""
    if isinstance(node, ast.Member) and node.base is None:
        return node.name
    if (isinstance(node, ast.Member) and isinstance(node.base, ast.Member)
            and node.base.base is None and node.base.name == "FHIR"):
        return node.name
    raise Unsupported("type argument")


def constant_string(node: ast.Node, scope: Scope) -> str:
    """A string literal or string ``%constant`` argument; Unsupported for anything else."""
    if isinstance(node, ast.Literal) and node.type == "System.String":
        return str(node.value)
    if isinstance(node, ast.External) and node.name in scope.constants:
        value, _ = scope.constants[node.name]
        if len(value) == 1 and isinstance(value[0], str):
            return value[0]
    raise Unsupported("argument is not a constant string")


def singleton(values: Collection) -> Any:
    """The one item of a collection, None if empty; FhirPathError for more than one."""
    if not values:
        return None
    if len(values) > 1:
        raise FhirPathError("expected a single item, got a collection")
    return values[0]


def to_decimal(value: Any) -> Decimal:
    """A number as a Decimal: a float by its shortest repr (``0.1`` is ``Decimal('0.1')``)."""
    if type(value) is Decimal:
        return value
    if type(value) is int:
        return Decimal(value)
    try:
        return Decimal(repr(value) if type(value) is float else str(value))
    except InvalidOperation as exc:  # pragma: no cover - only numbers reach here
        raise FhirPathError("not a number") from exc


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
