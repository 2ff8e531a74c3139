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
  ``collection: true``, which keeps the list;
- a column's values must be of its declared ``type`` (:mod:`.view_types`).

:func:`~.view_compile.compile_view` validates the view and compiles it into one generated
Python function (:mod:`.view_codegen`); this module runs it. A FHIR decimal in a row is what
the resource held (a :class:`~decimal.Decimal` with its written digits when parsed with
``json.loads(..., parse_float=Decimal)``, else a float); a computed one is a Decimal.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from dic_connector.sqlonfhir.view_compile import CompiledView, compile_view
from dic_connector.sqlonfhir.view_tree import Row

__all__ = ["CompiledView", "Row", "compile_view", "iter_rows", "run_view"]


def iter_rows(view: CompiledView, resources: Iterable[dict[str, Any]]) -> Iterator[Row]:
    """Rows of a compiled view, resource by resource (resources of other types are skipped)."""
    return view.run(resources)


def run_view(view: dict[str, Any], resources: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """All rows of the SQL-on-FHIR v2 ViewDefinition ``view`` over ``resources``.

    Raises :class:`~dic_connector.errors.ViewDefinitionError` (with the JSON path of the bad
    element) when the view is invalid, a column's path yields several values where one was
    declared, or a value is not of the column's declared type.
    """
    return list(compile_view(view).run(resources))
