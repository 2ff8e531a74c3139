"""Compiled FHIRPath functions: the ones ViewDefinitions use most.

Filtering and projection (``where``, ``select``, ``ofType``), existence (``exists``,
``empty``, ``not``, ``count``), subsetting (``first``, ``last``, ``tail``), strings (``join``)
(http://hl7.org/fhirpath/N1/#functions), ``extension(url)`` and ``choice.ofType(T)`` (handed
to :mod:`.paths`, which fuses them with the member steps around them) and the SQL-on-FHIR
additions ``getResourceKey()``, ``getReferenceKey([type])``, ``lowBoundary()``,
``highBoundary()`` (https://sql-on-fhir.org/ig/latest/StructureDefinition-ViewDefinition.html).
Any other function raises :class:`~.compile_context.Unsupported`.

Each handler in :data:`FUNCTIONS` gets the compiled base and the
:class:`~.compile_context.Compiler` through which it compiles its arguments (a ``where``
criterion, a ``select`` projection); :mod:`.compiler` dispatches calls here and passes itself.
"""

from __future__ import annotations

from collections.abc import Callable

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    Compiled,
    Compiler,
    Scope,
    Unsupported,
    constant_string,
    identity,
    type_argument,
)
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, Evaluator
from dic_connector.sqlonfhir.fhirpath.functions import (
    boundary,
    reference_key,
    resource_key,
    runtime_kind,
)
from dic_connector.sqlonfhir.fhirpath.operands import singleton
from dic_connector.sqlonfhir.fhirpath.paths import chain, walk

_Handler = Callable[[ast.Call, Evaluator, str | None, Scope, Compiler], Compiled]


def _arity(node: ast.Call, *allowed: int) -> None:
    if len(node.args) not in allowed:
        raise Unsupported(f"{node.name} with {len(node.args)} arguments")


def _where(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    _arity(node, 1)
    crit, crit_type = compiler.compile_node(node.args[0], base_type, scope)
    if types.kind(crit_type) != "boolean":
        raise Unsupported("where criterion is not typed boolean")
    test = compiler.compile_test(node.args[0], base_type, scope)
    if test is not None:  # a direct test of each item (see .criteria)
        def filtered(focus: Collection, env: Env) -> Collection:
            return [item for item in base(focus, env) if test(item, env)]

        return filtered, base_type

    def run(focus: Collection, env: Env) -> Collection:
        return [item for item in base(focus, env) if crit([item], env) == [True]]

    return run, base_type


def _select(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
            compiler: Compiler) -> Compiled:
    _arity(node, 1)
    projection, out_type = compiler.compile_node(node.args[0], base_type, scope)

    def run(focus: Collection, env: Env) -> Collection:
        out: Collection = []
        for item in base(focus, env):
            out.extend(projection([item], env))
        return out

    return run, out_type


def _exists(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
            compiler: Compiler) -> Compiled:
    _arity(node, 0, 1)
    if node.args:
        base, _ = _where(node, base, base_type, scope, compiler)
    return (lambda focus, env: [bool(base(focus, env))]), "System.Boolean"


def _empty(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    _arity(node, 0)
    return (lambda focus, env: [not base(focus, env)]), "System.Boolean"


def _count(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    _arity(node, 0)
    return (lambda focus, env: [len(base(focus, env))]), "System.Integer"


def _not(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
         compiler: Compiler) -> Compiled:
    _arity(node, 0)
    if types.kind(base_type) != "boolean":
        raise Unsupported("not() on a non-boolean")

    def run(focus: Collection, env: Env) -> Collection:
        value = singleton(base(focus, env))
        return [] if value is None else [not value]

    return run, "System.Boolean"


def _first(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    _arity(node, 0)
    return (lambda focus, env: base(focus, env)[:1]), base_type


def _last(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
          compiler: Compiler) -> Compiled:
    _arity(node, 0)
    return (lambda focus, env: base(focus, env)[-1:]), base_type


def _tail(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
          compiler: Compiler) -> Compiled:
    _arity(node, 0)
    return (lambda focus, env: base(focus, env)[1:]), base_type


def _of_type(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
             compiler: Compiler) -> Compiled:
    _arity(node, 1)
    wanted = type_argument(node.args[0])
    if base_type == wanted:
        return base, base_type
    raise Unsupported("ofType on a non-choice of another type")


def _join(node: ast.Call, base: Evaluator, base_type: str | None, scope: Scope,
          compiler: Compiler) -> Compiled:
    _arity(node, 0, 1)
    separator = constant_string(node.args[0], scope) if node.args else ""
    if types.kind(base_type) != "string":
        raise Unsupported("join() on non-strings")

    def run(focus: Collection, env: Env) -> Collection:
        values = base(focus, env)
        return [separator.join(values)] if values else []

    return run, "System.String"


def _resource_key(node: ast.Call, base: Evaluator, base_type: str | None,
                  scope: Scope, compiler: Compiler) -> Compiled:
    _arity(node, 0)
    if base_type is None or not types.is_resource_type(base_type):
        raise Unsupported("getResourceKey() on a non-resource")

    def run(focus: Collection, env: Env) -> Collection:
        out: Collection = []
        for item in focus if base is identity else base(focus, env):
            key = resource_key(item)
            if key is not None:
                out.append(key)
        return out

    return run, "System.String"


def _reference_key(node: ast.Call, base: Evaluator, base_type: str | None,
                   scope: Scope, compiler: Compiler) -> Compiled:
    _arity(node, 0, 1)
    wanted = type_argument(node.args[0]) if node.args else None
    if base_type != "Reference":
        raise Unsupported("getReferenceKey() on a non-Reference")

    def run(focus: Collection, env: Env) -> Collection:
        keys = (reference_key(item, wanted) for item in base(focus, env))
        return [key for key in keys if key is not None]

    return run, "System.String"


def _boundary(high: bool) -> _Handler:
    def handler(node: ast.Call, base: Evaluator, base_type: str | None,
                scope: Scope, compiler: Compiler) -> Compiled:
        _arity(node, 0)
        value_kind = types.kind(base_type)
        if value_kind not in ("number", "date", "dateTime", "time"):
            raise Unsupported("boundary of a non-ordered type")
        declared = "dateTime" if base_type in types.DATETIME_TYPES else value_kind

        def run(focus: Collection, env: Env) -> Collection:
            out: Collection = []
            for item in base(focus, env):
                item_kind = runtime_kind(item, declared)
                result = boundary(item, item_kind, high) if item_kind else None
                if result is not None:
                    out.append(result)
            return out

        out_type = "System.Decimal" if value_kind == "number" else base_type
        return run, out_type

    return handler


FUNCTIONS: dict[str, _Handler] = {
    "where": _where, "select": _select, "exists": _exists, "empty": _empty, "count": _count,
    "not": _not, "first": _first, "last": _last, "tail": _tail, "ofType": _of_type,
    "join": _join, "getResourceKey": _resource_key,
    "getReferenceKey": _reference_key, "lowBoundary": _boundary(False),
    "highBoundary": _boundary(True),
}


def compile_call(node: ast.Call, focus_type: str | None, scope: Scope,
                 compiler: Compiler) -> Compiled:
    """Compile ``base.name(args)``; Unsupported for functions outside :data:`FUNCTIONS`.

    ``extension(url)``, ``choice.ofType(T)`` and ``path.first()`` become fused navigation
    (:mod:`.paths`).
    """
    if node.name in ("extension", "ofType"):
        found = chain(node, focus_type, scope, compiler)
        if found is not None:
            start, out_type, steps = found
            return walk(start, steps), out_type
    if node.name == "first" and not node.args and node.base is not None:
        found = chain(node.base, focus_type, scope, compiler)
        if found is not None and found[2]:
            start, out_type, steps = found
            return walk(start, steps, first=True), out_type
    handler = FUNCTIONS.get(node.name)
    if handler is None:
        raise Unsupported(f"function {node.name}()")
    base: Evaluator = identity  # no base: the input is the focus itself
    base_type = focus_type
    if node.base is not None:
        base, base_type = compiler.compile_node(node.base, focus_type, scope)
    return handler(node, base, base_type, scope, compiler)
