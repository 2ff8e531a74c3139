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
- literals, constants, ``%rowIndex`` and ``%resource``;
- ``path.exists()`` and the other criteria with a direct test (:mod:`.criteria`), whose
  single value is the test itself.

They are built from the same AST and compile-time facts as the compiled closure (only for
trees the compiler accepted, through the same :data:`~.compiler.COMPILER`), and the property
test checks all forms agree with fhirpathpy.
"""

from __future__ import annotations

from typing import Any

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    Scope,
    constant_string,
    literal_values,
    type_argument,
)
from dic_connector.sqlonfhir.fhirpath.compiler import COMPILER, compile_test
from dic_connector.sqlonfhir.fhirpath.env import (
    Collection,
    Env,
    Evaluator,
    ItemEvaluator,
    MultipleValues,
    SingleEvaluator,
)
from dic_connector.sqlonfhir.fhirpath.functions import reference_key, resource_key
from dic_connector.sqlonfhir.fhirpath.paths import Step, steps_from_focus, walk_item, walk_single

Forms = tuple[ItemEvaluator, SingleEvaluator]


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
        steps = steps_from_focus(tree, focus_type, scope, COMPILER)
        if steps:
            return walk_item(steps), walk_single(steps)
        return None
    if not isinstance(tree, ast.Call):
        return None
    if tree.name == "first" and not tree.args and tree.base is not None:
        steps = steps_from_focus(tree.base, focus_type, scope, COMPILER)
        if steps:
            collect = walk_item(steps)
            return (lambda item, env: collect(item, env)[:1]), walk_single(steps, first=True)
        return None
    if tree.name in ("exists", "empty"):  # always one boolean: the test is the value
        test = compile_test(tree, focus_type, scope)
        if test is None:
            return None
        return (lambda item, env: [test(item, env)]), test
    if tree.name == "getResourceKey" and tree.base is None and not tree.args:
        return _resource_key_forms()
    if tree.name == "getReferenceKey" and len(tree.args) <= 1:
        steps = steps_from_focus(tree.base, focus_type, scope, COMPILER)
        if steps is None:
            return None
        wanted = type_argument(tree.args[0]) if tree.args else None
        return _reference_key_forms(steps, wanted)
    if tree.name == "join" and len(tree.args) <= 1 and tree.base is not None:
        steps = steps_from_focus(tree.base, focus_type, scope, COMPILER)
        if not steps:
            return None
        separator = constant_string(tree.args[0], scope) if tree.args else ""
        return _join_forms(steps, separator)
    return None
