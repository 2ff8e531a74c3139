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
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if len(first) == 1 and len(parts) == 2:
        head = first[0]
        return [{**head, **extra} for extra in parts[1]]
    rows: list[Row] = [{}]
    for part in parts:
        if not part:
            return []
        rows = [{**row, **extra} for row in rows for extra in part]
    return rows


def _row(plan: tuple[tuple[str, Evaluator, bool, str], ...], focus: Collection,
         env: Env) -> Row:
    row: Row = {}
    for name, evaluate, collection, path in plan:
        values = evaluate(focus, env)
        if collection:
            row[name] = values
        elif not values:
            row[name] = None
        elif len(values) == 1:
            row[name] = values[0]
        else:
            raise ViewDefinitionError(
                "the path gives more than one value; declare the column "
                "'collection: true' or narrow the path", path)
    return row


def _body(node: Select, focus: Collection, env: Env) -> list[Row]:
    row = _row(node.plan, focus, env)
    if not node.nested and not node.union:
        return [row]
    parts: list[list[Row]] = [[row]] if node.plan else []
    for child in node.nested:
        parts.append(_rows(child, focus, env))
    if node.union:
        parts.append([row for branch in node.union for row in _rows(branch, focus, env)])
    return _product(parts) if parts else [{}]


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


def _rows(node: Select, focus: Collection, env: Env) -> list[Row]:
    if node.mode == "plain":
        return _body(node, focus, env)
    items = _repeat(node, focus, env) if node.mode == "repeat" \
        else node.iterate[0].evaluate(focus, env)
    if not items:
        return _body(node, [], env.at(0)) if node.mode == "forEachOrNull" else []
    if not node.nested and not node.union:
        plan = node.plan
        if not node.uses_row_index:
            return [_row(plan, [item], env) for item in items]
        return [_row(plan, [item], env.at(index)) for index, item in enumerate(items)]
    rows: list[Row] = []
    if not node.uses_row_index:
        for item in items:
            rows.extend(_body(node, [item], env))
        return rows
    for index, item in enumerate(items):
        rows.extend(_body(node, [item], env.at(index)))
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
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
            continue
        focus = [resource]
        env = Env(resource)
        if where and not _passes(where, focus, env):
            continue
        yield from _body(root, focus, env)


def run_view(view: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All rows of the SQL-on-FHIR v2 ViewDefinition ``view`` over ``resources``.

    Raises :class:`~dic_connector.errors.ViewDefinitionError` (with the JSON path of the bad
    element) when the view is invalid or a column's path yields several values where one was
    declared.
    """
    return list(iter_rows(compile_view(view), resources))
