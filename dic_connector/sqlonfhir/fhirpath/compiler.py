"""FHIRPath AST to Python closures, for the subset views use most (the fast tier).

Each AST node becomes a closure ``(focus, env) -> collection`` (see :mod:`.env`) built once,
and a run of navigation steps one generated function (:mod:`.paths`); evaluating a column is
then a few dictionary lookups and list appends, with no tree walk and no per-item wrapper
objects. The compiler tracks the static FHIR type of every sub-expression
(:mod:`.types`), which is what lets it resolve ``value.ofType(Quantity)`` to the JSON key
``valueQuantity`` at compile time and pick number, string or date/time semantics for ``=`` and
``<`` (http://hl7.org/fhirpath/N1/#equality, #comparison).

This module is the dispatch at the top of the compiled tier: :class:`TreeCompiler` sends each
node kind to its handler (navigation to :mod:`.paths`, calls to :mod:`.compile_calls`, infix
operators to :mod:`.compile_operators`; literals, ``%constants``, ``$this``, indexers and
unary signs, which need no module of their own, here) and direct boolean tests to
:mod:`.criteria`. It passes itself to every handler as the
:class:`~.compile_context.Compiler` through which they compile their sub-expressions, so the
handlers never import it back. The dispatch runs at compile time only; the closures it returns
call each other directly.

Whatever the compiler is not sure about (unknown types, mixed-type comparisons, functions not
listed in :data:`FUNCTIONS` of :mod:`.compile_calls`, ``|``, ``is``/``as``...) raises
:class:`~.compile_context.Unsupported` and the whole expression goes to fhirpathpy instead
(:mod:`.fallback`). Semantics follow FHIRPath N1 (http://hl7.org/fhirpath/N1/); the property
test ``tests/dic_connector/sqlonfhir/fhirpath/test_property.py`` checks both tiers agree.
"""

from __future__ import annotations

from typing import Final

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compile_calls import compile_call
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    Compiled,
    Compiler,
    Scope,
    Unsupported,
    constant,
    identity,
    literal_values,
)
from dic_connector.sqlonfhir.fhirpath.compile_operators import compile_binary
from dic_connector.sqlonfhir.fhirpath.criteria import compiled_test
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, Test
from dic_connector.sqlonfhir.fhirpath.operands import singleton
from dic_connector.sqlonfhir.fhirpath.paths import chain, walk


class TreeCompiler:
    """The compiled tier's :class:`~.compile_context.Compiler`: node kind to handler.

    Stateless; :data:`COMPILER` is the one instance, and :func:`compile_node` and
    :func:`compile_test` are its methods as functions.
    """

    __slots__ = ()

    def compile_node(self, node: ast.Node, focus_type: str | None, scope: Scope) -> Compiled:
        """Closure and static result type for ``node`` evaluated on items of ``focus_type``."""
        if isinstance(node, ast.Literal):
            return constant(literal_values(node)), node.type
        if isinstance(node, ast.Empty):
            return constant([]), None
        if isinstance(node, ast.Variable):
            if node.name != "this":
                raise Unsupported(f"${node.name}")
            return identity, focus_type
        if isinstance(node, ast.External):
            return _external(node.name, scope)
        if isinstance(node, ast.Member):
            start, out_type, steps = chain(node, focus_type, scope, self) or (identity, None, ())
            return walk(start, steps), out_type
        if isinstance(node, ast.Index):
            return _index(node, focus_type, scope, self)
        if isinstance(node, ast.Call):
            return compile_call(node, focus_type, scope, self)
        if isinstance(node, ast.Unary):
            return _unary(node, focus_type, scope, self)
        if isinstance(node, ast.Binary):
            return compile_binary(node, focus_type, scope, self)
        raise Unsupported(type(node).__name__)

    def compile_test(self, tree: ast.Node, focus_type: str | None, scope: Scope) -> Test | None:
        """The direct test of a criterion the compiler accepts, None for other shapes."""
        return compiled_test(tree, focus_type, scope, self)


COMPILER: Final = TreeCompiler()


def compile_node(node: ast.Node, focus_type: str | None, scope: Scope) -> Compiled:
    """Closure and static result type for ``node`` on items of ``focus_type``.

    Unsupported when the node is outside the compiled subset.
    """
    return COMPILER.compile_node(node, focus_type, scope)


def compile_test(tree: ast.Node, focus_type: str | None, scope: Scope) -> Test | None:
    """``evaluate([item], env) == [True]`` as a direct test (:mod:`.criteria`), or None.

    Only for trees :func:`compile_node` accepted.
    """
    return COMPILER.compile_test(tree, focus_type, scope)


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


def _index(node: ast.Index, focus_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    base_fn, base_type = compiler.compile_node(node.base, focus_type, scope)
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


def _unary(node: ast.Unary, focus_type: str | None, scope: Scope,
           compiler: Compiler) -> Compiled:
    operand_fn, operand_type = compiler.compile_node(node.operand, focus_type, scope)
    if types.kind(operand_type) != "number":
        raise Unsupported("unary sign on a non-number")
    if node.op == "+":
        return operand_fn, operand_type

    def negate(focus: Collection, env: Env) -> Collection:
        value = singleton(operand_fn(focus, env))
        return [] if value is None else [-value]

    return negate, operand_type
