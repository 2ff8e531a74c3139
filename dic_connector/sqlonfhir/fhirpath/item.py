"""Single-item forms of an expression (see :mod:`.env`): what the view runner calls per row.

Any evaluator gets both forms for free (:func:`generic_forms`: build ``[item]``, evaluate,
then count the result). For the shapes that make up most ViewDefinition columns the compiled
tier builds direct ones instead (:func:`compiled_forms`), which read the item without making
the focus list or, for a single value, any list at all:

- a navigation path from the focus (``gender``, ``name.family``, ``value.ofType(Quantity)
  .value``, ``extension(url).value.ofType(Coding).code``, ``coding.where(system = %s)``),
  optionally ending in ``first()``;
- ``getResourceKey()`` and ``path.getReferenceKey([type])``;
- ``path.join(separator)``;
- literals, constants, ``%rowIndex`` and ``%resource``.

Boolean criteria get a third form, a *test* ``(item, env) -> bool`` that is true exactly when
the expression gives ``[True]`` on ``[item]`` (:func:`compiled_test`): what a ``where``
filter, of a view or of ``where(criterion)``, asks. It exists for the criteria ViewDefinitions
are made of, which never raise and give at most one boolean:

- ``path = constant`` and ``path != constant`` (string, boolean or number constant);
- ``A and B``, ``A or B`` of such tests (both sides always evaluated, as in the closure);
- ``path.exists()``, ``path.empty()``, ``path.exists(test)``, stopping at the first item
  found; ``path`` may contain ``where(test)`` steps (:mod:`.paths`).

They are built from the same AST and compile-time facts as the compiled closure (only for
trees the compiler accepted), and the property test checks all three forms agree with
fhirpathpy.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compiler import (
    Scope,
    Unsupported,
    compile_node,
    constant_string,
    constant_value,
    identity,
    literal_values,
    number_equal,
    type_argument,
)
from dic_connector.sqlonfhir.fhirpath.env import (
    Collection,
    Env,
    Evaluator,
    ItemEvaluator,
    MultipleValues,
    SingleEvaluator,
)
from dic_connector.sqlonfhir.fhirpath.functions import reference_key, resource_key
from dic_connector.sqlonfhir.fhirpath.paths import Step, chain, walk_item, walk_single, walker

Forms = tuple[ItemEvaluator, SingleEvaluator]
Test = Callable[[Any, Env], bool]


def one_value(values: Collection) -> Any:
    """A collection as a column value: None if empty, the item, or MultipleValues."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    raise MultipleValues


def generic_forms(evaluate: Evaluator) -> Forms:
    """Both single-item forms of any evaluator."""

    def on_item(item: Any, env: Env) -> Collection:
        return evaluate([item], env)

    def single(item: Any, env: Env) -> Any:
        values = evaluate([item], env)
        if not values:
            return None
        if len(values) == 1:
            return values[0]
        raise MultipleValues

    return on_item, single


def _steps_from_focus(node: ast.Node | None, focus_type: str | None,
                      scope: Scope) -> tuple[Step, ...] | None:
    """The navigation steps of ``node`` when it is a path starting at the focus item."""
    if node is None:
        return ()
    try:
        found = chain(node, focus_type, scope)
    except Unsupported:
        return None
    if found is None or not found[2]:
        return None
    start, _, steps = found
    return steps if start is identity else None


def _constant_forms(values: Collection) -> Forms:
    frozen = tuple(values)
    value = frozen[0] if frozen else None
    several = len(frozen) > 1

    def on_item(item: Any, env: Env) -> Collection:
        return list(frozen)

    def single(item: Any, env: Env) -> Any:
        if several:
            raise MultipleValues
        return value

    return on_item, single


def _external_forms(node: ast.External, scope: Scope) -> Forms | None:
    if node.name == "rowIndex":
        return (lambda item, env: [env.row_index]), (lambda item, env: env.row_index)
    if node.name in ("resource", "rootResource", "context"):
        return (lambda item, env: [env.resource]), (lambda item, env: env.resource)
    if node.name in scope.constants:
        return _constant_forms(scope.constants[node.name][0])
    return None


def _reference_key_forms(steps: tuple[Step, ...], wanted: str | None) -> Forms:
    targets = walk_item(steps) if steps else (lambda item, env: [item])

    def on_item(item: Any, env: Env) -> Collection:
        keys = (reference_key(target, wanted) for target in targets(item, env))
        return [key for key in keys if key is not None]

    def single(item: Any, env: Env) -> Any:
        found = targets(item, env)
        if len(found) == 1:
            return reference_key(found[0], wanted)
        return one_value([key for key in (reference_key(t, wanted) for t in found)
                          if key is not None])

    return on_item, single


def _join_forms(steps: tuple[Step, ...], separator: str) -> Forms:
    values = walk_item(steps)

    def on_item(item: Any, env: Env) -> Collection:
        found = values(item, env)
        return [separator.join(found)] if found else []

    def single(item: Any, env: Env) -> Any:
        found = values(item, env)
        return separator.join(found) if found else None

    return on_item, single


def _resource_key_forms() -> Forms:
    def on_item(item: Any, env: Env) -> Collection:
        key = resource_key(item)
        return [] if key is None else [key]

    def single(item: Any, env: Env) -> Any:
        return resource_key(item)

    return on_item, single


def _equality_test(node: ast.Binary, focus_type: str | None, scope: Scope) -> Test | None:
    """``path = constant`` / ``path != constant`` as the compiled closure decides them."""
    steps = _steps_from_focus(node.left, focus_type, scope)
    wanted = constant_value(node.right, scope)
    if not steps or wanted is None or len(wanted) != 1:
        return None
    value_kind = types.kind(compile_node(node.left, focus_type, scope)[1])
    if value_kind not in ("string", "boolean", "number") or \
            value_kind != types.kind(compile_node(node.right, focus_type, scope)[1]):
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


def _logic_test(node: ast.Binary, focus_type: str | None, scope: Scope) -> Test | None:
    left = compiled_test(node.left, focus_type, scope)
    right = compiled_test(node.right, focus_type, scope)
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
                 scope: Scope) -> Test | None:
    """``base.exists([criterion])``, base a path from the focus (``where()`` steps included)."""
    steps = _steps_from_focus(base, focus_type, scope)
    if not steps or base is None:
        return None
    if criterion is not None:
        found = chain(base, focus_type, scope)
        test = None if found is None else compiled_test(criterion, found[1], scope)
        if test is None:
            return None
        steps = (*steps, Step(test=test))
    first = walker(steps, "single_first")  # stops at the first value
    return lambda item, env: first(item, env) is not None


def compiled_test(tree: ast.Node, focus_type: str | None, scope: Scope) -> Test | None:
    """``evaluate([item], env) == [True]`` for the criteria shapes above, else None.

    Only for trees the compiler accepts (the caller compiled ``tree`` already).
    """
    if isinstance(tree, ast.Binary) and tree.op in ("=", "!="):
        return _equality_test(tree, focus_type, scope)
    if isinstance(tree, ast.Binary) and tree.op in ("and", "or"):
        return _logic_test(tree, focus_type, scope)
    if isinstance(tree, ast.Call) and tree.name in ("exists", "empty") and len(tree.args) <= 1:
        if tree.name == "empty" and tree.args:
            return None
        found = _exists_test(tree.base, tree.args[0] if tree.args else None, focus_type, scope)
        if found is None or tree.name == "exists":
            return found
        exists = found
        return lambda item, env: not exists(item, env)
    return None


def compiled_forms(tree: ast.Node, focus_type: str | None, scope: Scope) -> Forms | None:
    """Direct single-item forms of a tree the compiler accepted; None for other shapes.

    Each form must give what the compiled closure gives on ``[item]``: the shapes below are
    exactly the ones :mod:`.compile_calls` and :mod:`.paths` compile the same way.
    """
    if isinstance(tree, ast.Literal):
        return _constant_forms(literal_values(tree))
    if isinstance(tree, ast.External):
        return _external_forms(tree, scope)
    if isinstance(tree, ast.Member) or (
            isinstance(tree, ast.Call) and tree.name in ("extension", "ofType", "where")):
        steps = _steps_from_focus(tree, focus_type, scope)
        if steps:
            return walk_item(steps), walk_single(steps)
        return None
    if not isinstance(tree, ast.Call):
        return None
    if tree.name == "first" and not tree.args and tree.base is not None:
        steps = _steps_from_focus(tree.base, focus_type, scope)
        if steps:
            collect = walk_item(steps)
            return (lambda item, env: collect(item, env)[:1]), walk_single(steps, first=True)
        return None
    if tree.name in ("exists", "empty"):  # always one boolean: the test is the value
        test = compiled_test(tree, focus_type, scope)
        if test is None:
            return None
        return (lambda item, env: [test(item, env)]), test
    if tree.name == "getResourceKey" and tree.base is None and not tree.args:
        return _resource_key_forms()
    if tree.name == "getReferenceKey" and len(tree.args) <= 1:
        steps = _steps_from_focus(tree.base, focus_type, scope)
        if steps is None:
            return None
        wanted = type_argument(tree.args[0]) if tree.args else None
        return _reference_key_forms(steps, wanted)
    if tree.name == "join" and len(tree.args) <= 1 and tree.base is not None:
        steps = _steps_from_focus(tree.base, focus_type, scope)
        if not steps:
            return None
        separator = constant_string(tree.args[0], scope) if tree.args else ""
        return _join_forms(steps, separator)
    return None
