"""Run a SQL-on-FHIR v2 ViewDefinition over FHIR resources: rows out.

The semantics are the functional model of the specification
(https://sql-on-fhir.org/ig/latest/implementer_guidance.html#processing-algorithm-model):

- a resource of the view's type passes when every ``where`` path is true (empty is false; a
  non-boolean result is an error);
- a select node yields the cross product of its columns' row, its nested selects' rows and
  the concatenation of its ``unionAll`` branches' rows, in that column order;
- ``forEach`` runs the node once per item of its collection (no item, no rows);
  ``forEachOrNull`` runs it once on the empty collection when there is no item; ``repeat``
  runs it for every item reached by applying its paths recursively, depth first, in document
  order (the starting node itself excluded);
- ``%rowIndex`` is the 0-based index of the item in the innermost enclosing forEach /
  forEachOrNull / repeat (0 at the top, and for the empty run of forEachOrNull);
- a column is ``null`` for an empty result, the value for one item, an error for more unless
  ``collection: true``, which keeps the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from dic_connector.errors import ViewDefinitionError
from dic_connector.mapping.fhirpath import CompiledExpression
from dic_connector.mapping.fhirpath.env import Collection, Env, Evaluator
from dic_connector.mapping.view_compile import CompiledView, Select, compile_view

Row = dict[str, Any]

__all__ = ["CompiledView", "compile_view", "iter_rows", "run_view"]


def _product(parts: list[list[Row]]) -> list[Row]:
    rows = parts[0]
    for part in parts[1:]:
        if not part:
            return []
        rows = [{**row, **extra} for row in rows for extra in part]
    return rows


def _row(plan: tuple[tuple[str, Evaluator, bool, str], ...], focus: Collection, env: Env,
         row: Row) -> Row:
    """``row`` (a fresh dict, maybe pre-filled with the parent's columns) plus ``plan``."""
    for name, evaluate, collection, path in plan:
        values = evaluate(focus, env)
        if collection:
            row[name] = values
        elif len(values) == 1:
            row[name] = values[0]
        elif not values:
            row[name] = None
        else:
            raise ViewDefinitionError(
                "the path gives more than one value; declare the column "
                "'collection: true' or narrow the path", path)
    return row


def _body(node: Select, focus: Collection, env: Env, head: Row | None) -> list[Row]:
    """Rows of ``node`` on one focus, each starting with the columns of ``head``.

    Passing the parent's row down (instead of building child rows and merging them) saves a
    dict per row in the common "columns, then one forEach" shape.
    """
    row = _row(node.plan, focus, env, {} if head is None else head.copy())
    if not node.nested and not node.union:
        return [row]
    if len(node.nested) == 1 and not node.union:
        return _rows(node.nested[0], focus, env, row)
    parts: list[list[Row]] = [[row]]
    for child in node.nested:
        parts.append(_rows(child, focus, env, None))
    if node.union:
        parts.append([r for branch in node.union for r in _rows(branch, focus, env, None)])
    return _product(parts)


def _repeat(node: Select, focus: Collection, env: Env) -> Collection:
    found: Collection = []

    def walk(items: Collection) -> None:
        for item in items:
            found.append(item)
            for expr in node.recurse:
                walk(expr.evaluate([item], env))

    for expr in node.iterate:
        walk(expr.evaluate(focus, env))
    return found


def _rows(node: Select, focus: Collection, env: Env, head: Row | None) -> list[Row]:
    if node.mode == "plain":
        return _body(node, focus, env, head)
    items = _repeat(node, focus, env) if node.mode == "repeat" \
        else node.iterate[0].evaluate(focus, env)
    if not items:
        return _body(node, [], env.at(0), head) if node.mode == "forEachOrNull" else []
    if not node.nested and not node.union:
        plan = node.plan
        if not node.uses_row_index:
            if head is None:
                return [_row(plan, [item], env, {}) for item in items]
            return [_row(plan, [item], env, head.copy()) for item in items]
        return [_row(plan, [item], env.at(index), {} if head is None else head.copy())
                for index, item in enumerate(items)]
    rows: list[Row] = []
    if not node.uses_row_index:
        for item in items:
            rows.extend(_body(node, [item], env, head))
        return rows
    for index, item in enumerate(items):
        rows.extend(_body(node, [item], env.at(index), head))
    return rows


def _passes(where: tuple[tuple[CompiledExpression, str], ...], focus: Collection,
            env: Env) -> bool:
    for expr, path in where:
        result = expr.evaluate(focus, env)
        if not result:
            return False
        if len(result) != 1 or not isinstance(result[0], bool):
            raise ViewDefinitionError("must evaluate to a single boolean", path)
        if not result[0]:
            return False
    return True


def iter_rows(view: CompiledView, resources: Iterable[dict[str, Any]]) -> Iterator[Row]:
    """Rows of a compiled view, resource by resource (resources of other types are skipped)."""
    resource_type = view.resource
    root, where = view.root, view.where
    if not root.nested and not root.union:
        plan = root.plan
        for resource in resources:
            if type(resource) is not dict or resource.get("resourceType") != resource_type:
                continue
            focus, env = [resource], Env(resource)
            if not where or _passes(where, focus, env):
                yield _row(plan, focus, env, {})
        return
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            continue
        focus = [resource]
        env = Env(resource)
        if where and not _passes(where, focus, env):
            continue
        yield from _body(root, focus, env, None)


def run_view(view: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All rows of the SQL-on-FHIR v2 ViewDefinition ``view`` over ``resources``.

    Raises :class:`~dic_connector.errors.ViewDefinitionError` (with the JSON path of the bad
    element) when the view is invalid or a column's path yields several values where one was
    declared.
    """
    return list(iter_rows(compile_view(view), resources))
