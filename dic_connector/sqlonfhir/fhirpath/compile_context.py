"""What every part of the compiled tier shares: its scope, its result, its way out, its recursion.

The compiled tier turns a FHIRPath AST into Python closures (see :mod:`.compiler`). The work
is split by node kind into handler modules, :mod:`.paths` (navigation), :mod:`.criteria`
(direct boolean tests), :mod:`.compile_operators` and :mod:`.compile_calls`, and each of them
meets sub-expressions of every kind: the operands of ``=``, the criterion of ``where``, the
base of a path. They build on this module only:

- :class:`Scope`: the compile-time bindings (the view's constants and resource type);
- :data:`Compiled`: what compiling a node gives, the closure and its static FHIR type;
- :class:`Unsupported`: raised by any handler when a node is outside the compiled subset,
  which sends the whole expression to fhirpathpy (:mod:`.fallback`);
- :class:`Compiler`: the recursion. A handler compiles a sub-expression through the
  :class:`Compiler` it is given, never by importing the dispatch; :mod:`.compiler`, above
  the handlers, is the one implementation and passes itself down. Everything here happens
  once per expression, at compile time: the closures the handlers return call each other
  directly, with no dispatch per row;
- readers of compile-time arguments (literals, ``%constants``, type names).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, Evaluator, Test


class Unsupported(Exception):
    """The expression is outside the compiled subset; evaluate it with fhirpathpy."""


@dataclass(frozen=True, slots=True)
class Scope:
    """Compile-time bindings: constants (value collection, FHIR type) and the view's resource."""

    constants: Mapping[str, tuple[Collection, str | None]]
    resource_type: str


Compiled = tuple[Evaluator, str | None]
BUILTIN_EXTERNALS = frozenset({"rowIndex", "resource", "rootResource", "context", "ucum"})


class Compiler(Protocol):
    """The compiled tier's recursion, as the handler modules see it.

    ``compile_node`` gives the closure and static type of any node on items of
    ``focus_type`` (Unsupported outside the compiled subset); ``compile_test`` the direct
    :data:`~.env.Test` of a boolean criterion the compiler accepts, or None when its shape has
    none (:mod:`.criteria`).
    """

    def compile_node(self, node: ast.Node, focus_type: str | None, scope: Scope) -> Compiled:
        ...

    def compile_test(self, tree: ast.Node, focus_type: str | None, scope: Scope) -> Test | None:
        ...


def identity(focus: Collection, env: Env) -> Collection:
    """The closure of ``$this`` and of an absent base: the focus itself.

    Handlers test ``start is identity`` to drop a call that would do nothing.
    """
    return focus


def constant(value: Collection) -> Evaluator:
    """A closure giving a fresh copy of ``value`` (results belong to the caller)."""

    def run(focus: Collection, env: Env) -> Collection:
        return list(value)

    return run


def literal_values(node: ast.Literal) -> Collection:
    """The value of a literal; decimals as :class:`~decimal.Decimal` with their written digits."""
    if node.type in ("System.String", "System.Boolean", "System.Integer", "System.Date",
                     "System.DateTime", "System.Time"):
        return [node.value]
    if node.type == "System.Decimal":
        return [Decimal(str(node.value))]
    raise Unsupported(node.type)


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
