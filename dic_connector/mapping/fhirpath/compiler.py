"""FHIRPath AST to Python closures, for the subset views use most (the fast tier).

Each AST node becomes a closure ``(focus, env) -> collection`` (see :mod:`.env`) built once;
evaluating a column is then a few dictionary lookups and list appends, with no tree walk and
no per-item wrapper objects. The compiler tracks the static FHIR type of every sub-expression
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
from dic_connector.mapping.fhirpath import parser as ast
from dic_connector.mapping.fhirpath import types
from dic_connector.mapping.fhirpath.env import Collection, Env, Evaluator
from dic_connector.mapping.fhirpath.functions import temporal_equal


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
        return _member(node, focus_type, scope)
    if isinstance(node, ast.Index):
        return _index(node, focus_type, scope)
    if isinstance(node, ast.Call):
        from dic_connector.mapping.fhirpath.compile_calls import compile_call

        return compile_call(node, focus_type, scope)
    if isinstance(node, ast.Unary):
        return _unary(node, focus_type, scope)
    if isinstance(node, ast.Binary):
        from dic_connector.mapping.fhirpath.compile_operators import compile_binary

        return compile_binary(node, focus_type, scope)
    raise Unsupported(type(node).__name__)


def compile_base(base: ast.Node | None, focus_type: str | None, scope: Scope) -> Compiled:
    """The input of a member or call: the focus itself when there is no explicit base."""
    if base is None:
        return identity, focus_type
    return compile_node(base, focus_type, scope)


def _literal(node: ast.Literal) -> Compiled:
    if node.type in ("System.String", "System.Boolean", "System.Integer", "System.Date",
                     "System.DateTime", "System.Time"):
        return constant([node.value]), node.type
    if node.type == "System.Decimal":
        return constant([float(str(node.value))]), node.type
    raise Unsupported(node.type)


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


def _children(items: Collection, keys: tuple[str, ...]) -> Collection:
    """Values under ``keys`` of every dict in ``items``, arrays flattened, nulls dropped."""
    out: Collection = []
    for item in items:
        if type(item) is dict:
            for key in keys:
                value = item.get(key)
                if value is None:
                    continue
                if type(value) is list:
                    out.extend(value if None not in value else
                               [v for v in value if v is not None])
                else:
                    out.append(value)
    return out


def _one_key(key: str) -> Evaluator:
    """``name`` on the focus, with a fast path for the usual single-item focus."""

    def run(focus: Collection, env: Env) -> Collection:
        if len(focus) == 1:
            item = focus[0]
            if type(item) is not dict:
                return []
            value = item.get(key)
            if value is None:
                return []
            if type(value) is list:
                return [v for v in value if v is not None]
            return [value]
        return _children(focus, (key,))

    return run


def navigate(base_fn: Evaluator, steps: tuple[tuple[str, ...], ...]) -> Evaluator:
    """A fused member chain: ``steps`` are the JSON keys tried at each level.

    One closure walks the whole chain (``name.given`` is one call, not two), the common
    one-key-per-level case without the inner key loop.
    """
    if len(steps) == 1 and len(steps[0]) == 1 and base_fn is identity:
        return _one_key(steps[0][0])
    if all(len(keys) == 1 for keys in steps):
        single = tuple(keys[0] for keys in steps)

        def plain_chain(focus: Collection, env: Env) -> Collection:
            items = focus if base_fn is identity else base_fn(focus, env)
            for key in single:
                out: Collection = []
                for item in items:
                    if type(item) is dict:
                        value = item.get(key)
                        if value is None:
                            continue
                        if type(value) is list:
                            out.extend(value if None not in value else
                                       [v for v in value if v is not None])
                        else:
                            out.append(value)
                if not out:
                    return out
                items = out
            return items

        return plain_chain

    def chain(focus: Collection, env: Env) -> Collection:
        items = focus if base_fn is identity else base_fn(focus, env)
        for keys in steps:
            items = _children(items, keys)
            if not items:
                return items
        return items

    return chain


def _member_chain(node: ast.Member, focus_type: str | None, scope: Scope
                  ) -> tuple[Evaluator, str | None, list[tuple[str, ...]]]:
    """(start evaluator, type, key steps) of the longest member chain ending at ``node``."""
    if isinstance(node.base, ast.Member):
        start, base_type, steps = _member_chain(node.base, focus_type, scope)
    else:
        start, base_type = compile_base(node.base, focus_type, scope)
        steps = []
    if (node.base is None and base_type is not None and node.name == base_type
            and types.is_resource_type(node.name)):
        name = node.name

        def of_resource_type(focus: Collection, env: Env) -> Collection:
            return [r for r in focus if type(r) is dict and r.get("resourceType") == name]

        return of_resource_type, base_type, []
    info = types.member(base_type, node.name)
    if info is None:
        raise Unsupported(f"member {node.name} on {base_type}")
    if isinstance(info, types.Plain):
        return start, info.type, [*steps, (info.key,)]
    keys = tuple(key for key, _ in info.options)
    only = info.options[0][1] if len(info.options) == 1 else None
    return start, only, [*steps, keys]


def _member(node: ast.Member, focus_type: str | None, scope: Scope) -> Compiled:
    start, out_type, steps = _member_chain(node, focus_type, scope)
    if not steps:
        return start, out_type
    return navigate(start, tuple(steps)), out_type


def choice_option(node: ast.Member, focus_type: str | None, scope: Scope,
                  wanted: str) -> Compiled | None:
    """``choice.ofType(T)`` as one key lookup, when ``node`` is a choice member."""
    base_fn, base_type = compile_base(node.base, focus_type, scope)
    info = types.member(base_type, node.name)
    if not isinstance(info, types.Choice):
        return None
    for key, fhir_type in info.options:
        if fhir_type == wanted:
            return navigate(base_fn, ((key,),)), fhir_type
    raise Unsupported(f"{node.name} has no option {wanted}")


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
            "System.String", "System.Boolean", "System.Integer"):
        return [node.value]
    if isinstance(node, ast.External) and node.name in scope.constants:
        return list(scope.constants[node.name][0])
    return None


def singleton(values: Collection) -> Any:
    """The one item of a collection, None if empty; FhirPathError for more than one."""
    if not values:
        return None
    if len(values) > 1:
        raise FhirPathError("expected a single item, got a collection")
    return values[0]


def to_decimal(value: Any) -> Decimal:
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:  # pragma: no cover - only numbers reach here
        raise FhirPathError("not a number") from exc


def equal_items(left: Any, right: Any, kind: str) -> bool | None:
    """FHIRPath ``=`` on two single items of the same comparison kind."""
    if kind in ("date", "dateTime", "time"):
        return temporal_equal(left, right, kind == "time")
    return bool(left == right)
