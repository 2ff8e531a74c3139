"""FHIRPath (http://hl7.org/fhirpath/N1/) for ViewDefinitions, in two tiers.

Modules, in dependency order:

- ``tokenizer``          expression text to tokens
- ``parser``             tokens to an immutable AST (Pratt parser)
- ``types``              static FHIR R4 types: member names, choice elements
- ``env``                run-time context (resource, ``%rowIndex``) and the evaluator types
- ``functions``          value semantics shared by both tiers (date/time, boundaries, keys)
- ``operands``           compiled-tier operands: singletons, decimals, equality by kind
- ``compile_context``    ``Scope``, ``Unsupported``, the ``Compiler`` recursion protocol
- ``paths``              fused navigation: members, ``extension(url)``, ``choice.ofType(T)``
- ``criteria``           boolean criteria as direct tests ``(item, env) -> bool``
- ``compile_operators``  compiled ``and or = < + ...``
- ``compile_calls``      compiled ``where first exists join getReferenceKey ...``
- ``compiler``           the dispatch: AST node kind to handler, passed down as ``Compiler``
- ``item``               the single-item forms the view runner calls per row
- ``fallback``           fhirpathpy (FHIR R4 model) for everything else

The compiled tier is recursive (an operand, a ``where`` criterion, a path's base may be any
expression) but its modules are not: the handler modules (``paths`` to ``compile_calls``)
compile sub-expressions through the :class:`~.compile_context.Compiler` they are handed, and
``compiler``, above them, is the one that dispatches and hands itself down. All of it runs
once per expression; the closures built call each other directly.

:func:`compile_expression` decides the tier once per expression, at compile time: the
compiled closure when the whole expression is in the subset the compiler knows, fhirpathpy
otherwise. Both are called the same way, ``expr(focus, env) -> list``, and both come with the
single-item forms ``on_item(item, env) -> list`` and ``single(item, env) -> value`` (see
:mod:`.env`), direct ones for the common compiled shapes (:mod:`.item`).

Our parser is the one judge of syntax for both tiers: fhirpathpy's ANTLR parser recovers from
syntax errors without a word (``a b`` runs as ``a``, ``name.given[`` as ``name.given``), and a
typo in a mapping must fail loudly instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dic_connector.errors import FhirPathError
from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    BUILTIN_EXTERNALS,
    Scope,
    Unsupported,
)
from dic_connector.sqlonfhir.fhirpath.compiler import compile_node, compile_test
from dic_connector.sqlonfhir.fhirpath.env import (
    Collection,
    Env,
    Evaluator,
    ItemEvaluator,
    MultipleValues,
    SingleEvaluator,
    Test,
)
from dic_connector.sqlonfhir.fhirpath.fallback import FallbackExpression, typed_constant
from dic_connector.sqlonfhir.fhirpath.item import compiled_forms, generic_forms

__all__ = ["CompiledExpression", "Env", "MultipleValues", "Scope", "compile_expression",
           "externals"]


@dataclass(frozen=True, slots=True)
class CompiledExpression:
    """An expression ready to run: ``evaluate(focus, env)``; ``type`` is its static type.

    ``on_item`` and ``single`` are the same expression on the focus ``[item]`` (:mod:`.env`);
    ``test``, when not None, says whether it gives ``[True]`` there (:mod:`.criteria`).
    """

    text: str
    evaluate: Evaluator
    type: str | None
    tier: str  #: "compiled" or "fhirpathpy"
    on_item: ItemEvaluator
    single: SingleEvaluator
    test: Test | None = None

    def __call__(self, focus: Collection, env: Env) -> Collection:
        return self.evaluate(focus, env)


def externals(node: ast.Node) -> set[str]:
    """Names of every ``%constant`` used in ``node``."""
    found: set[str] = set()
    stack: list[ast.Node | None] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.External):
            found.add(item.name)
        elif isinstance(item, ast.Member):
            stack.append(item.base)
        elif isinstance(item, ast.Call):
            stack.append(item.base)
            stack.extend(item.args)
        elif isinstance(item, ast.Index):
            stack.extend((item.base, item.index))
        elif isinstance(item, ast.Unary):
            stack.append(item.operand)
        elif isinstance(item, ast.Binary):
            stack.extend((item.left, item.right))
        elif isinstance(item, ast.TypeOp):
            stack.append(item.operand)
    return found


def compile_expression(text: str, focus_type: str | None, scope: Scope,
                       *, allow_compiled: bool = True) -> CompiledExpression:
    """Compile ``text`` for items of ``focus_type``; FhirPathError if it is not FHIRPath.

    ``allow_compiled=False`` forces the fhirpathpy tier (benchmarks and the property test).
    """
    static_type: str | None = None
    tree = ast.parse(text)
    undefined = externals(tree) - set(scope.constants) - BUILTIN_EXTERNALS
    if undefined:
        raise FhirPathError(f"undefined constant %{sorted(undefined)[0]} in {text!r}")
    try:
        evaluate, out_type = compile_node(tree, focus_type, scope)
    except Unsupported:
        pass
    else:
        if allow_compiled:
            on_item, single = compiled_forms(tree, focus_type, scope) or generic_forms(evaluate)
            return CompiledExpression(text, evaluate, out_type, "compiled", on_item, single,
                                      compile_test(tree, focus_type, scope))
        static_type = out_type
    constants: Mapping[str, Collection] = {
        name: typed_constant(value, fhir_type)
        for name, (value, fhir_type) in scope.constants.items()
    }
    fallback = FallbackExpression(text, focus_type, constants)
    return CompiledExpression(text, fallback, static_type, "fhirpathpy", *generic_forms(fallback))
