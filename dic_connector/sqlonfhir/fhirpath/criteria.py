"""Boolean criteria as direct tests: ``(item, env) -> bool`` without the focus list.

A ``where`` filter, of a view or of ``where(criterion)``, asks whether the criterion gives
``[True]`` on ``[item]``. For the criteria ViewDefinitions are made of, which never raise and
give at most one boolean, the compiled tier builds a *test* (:data:`~.env.Test`) that answers
exactly that, reading the item directly (:func:`compiled_test`):

- ``path = constant`` and ``path != constant`` (string, boolean or number constant);
- ``A and B``, ``A or B`` of such tests (both sides always evaluated, as in the closure);
- ``path.exists()``, ``path.empty()``, ``path.exists(test)``, stopping at the first item
  found; ``path`` may contain ``where(test)`` steps (:mod:`.paths`).

Tests are built from the same AST and compile-time facts as the compiled closure (only for
trees the compiler accepted), and the property test checks they agree with fhirpathpy.
Navigation inside a criterion is :mod:`.paths`; the static types of its operands come from the
:class:`~.compile_context.Compiler` the caller passes in, which is also how :mod:`.paths`
reaches this module back for ``where(criterion)`` steps.
"""

from __future__ import annotations

import operator
from typing import Any

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compile_context import Compiler, Scope, constant_value
from dic_connector.sqlonfhir.fhirpath.env import Env, MultipleValues, Test
from dic_connector.sqlonfhir.fhirpath.operands import number_equal
from dic_connector.sqlonfhir.fhirpath.paths import (
    Step,
    chain,
    steps_from_focus,
    walk_single,
    walker,
)


def _equality_test(node: ast.Binary, focus_type: str | None, scope: Scope,
                   compiler: Compiler) -> Test | None:
    """``path = constant`` / ``path != constant`` as the compiled closure decides them."""
    steps = steps_from_focus(node.left, focus_type, scope, compiler)
    wanted = constant_value(node.right, scope)
    if not steps or wanted is None or len(wanted) != 1:
        return None
    value_kind = types.kind(compiler.compile_node(node.left, focus_type, scope)[1])
    if value_kind not in ("string", "boolean", "number") or \
            value_kind != types.kind(compiler.compile_node(node.right, focus_type, scope)[1]):
        return None
    # [True] for "=" when there is one value and it is the constant; for "!=" when there are
    # several (the sizes differ) or one that is not the constant; else [False] or empty
    value, constant = walk_single(steps), wanted[0]
    same = number_equal if value_kind == "number" else operator.eq

    if node.op == "!=":
        def differs(item: Any, env: Env) -> bool:
            try:
                found = value(item, env)
            except MultipleValues:
                return True
            return found is not None and not same(found, constant)

        return differs
    if value_kind != "number":  # the usual code or system test, without a call for "same"
        def is_constant(item: Any, env: Env) -> bool:
            try:
                return bool(value(item, env) == constant)
            except MultipleValues:
                return False

        return is_constant

    def equals(item: Any, env: Env) -> bool:
        try:
            found = value(item, env)
        except MultipleValues:
            return False
        return found is not None and same(found, constant)

    return equals


def _logic_test(node: ast.Binary, focus_type: str | None, scope: Scope,
                compiler: Compiler) -> Test | None:
    left = compiled_test(node.left, focus_type, scope, compiler)
    right = compiled_test(node.right, focus_type, scope, compiler)
    if left is None or right is None:
        return None
    if node.op == "and":
        def both(item: Any, env: Env) -> bool:
            a = left(item, env)
            b = right(item, env)
            return a and b

        return both

    def either(item: Any, env: Env) -> bool:
        a = left(item, env)
        b = right(item, env)
        return a or b

    return either


def _exists_test(base: ast.Node | None, criterion: ast.Node | None, focus_type: str | None,
                 scope: Scope, compiler: Compiler) -> Test | None:
    """``base.exists([criterion])``, base a path from the focus (``where()`` steps included)."""
    steps = steps_from_focus(base, focus_type, scope, compiler)
    if not steps or base is None:
        return None
    if criterion is not None:
        found = chain(base, focus_type, scope, compiler)
        test = None if found is None else compiled_test(criterion, found[1], scope, compiler)
        if test is None:
            return None
        steps = (*steps, Step(test=test))
    first = walker(steps, "single_first")  # stops at the first value
    return lambda item, env: first(item, env) is not None


def compiled_test(tree: ast.Node, focus_type: str | None, scope: Scope,
                  compiler: Compiler) -> Test | None:
    """``evaluate([item], env) == [True]`` for the criteria shapes above, else None.

    Only for trees the compiler accepts (the caller compiled ``tree`` already).
    """
    if isinstance(tree, ast.Binary) and tree.op in ("=", "!="):
        return _equality_test(tree, focus_type, scope, compiler)
    if isinstance(tree, ast.Binary) and tree.op in ("and", "or"):
        return _logic_test(tree, focus_type, scope, compiler)
    if isinstance(tree, ast.Call) and tree.name in ("exists", "empty") and len(tree.args) <= 1:
        if tree.name == "empty" and tree.args:
            return None
        found = _exists_test(tree.base, tree.args[0] if tree.args else None, focus_type, scope,
                             compiler)
        if found is None or tree.name == "exists":
            return found
        exists = found
        return lambda item, env: not exists(item, env)
    return None
