"""What an expression sees at run time besides its input, and the shapes of evaluators.

Both tiers evaluate ``(focus, env) -> collection``: ``focus`` is the input collection (a list of
JSON values as parsed from FHIR JSON, https://hl7.org/fhir/R4/json.html), ``env`` the
per-row context. ViewDefinition constants are bound at compile time, not here.

The view runner mostly evaluates on one item (the resource, or one ``forEach`` item), so every
expression also comes in two single-item forms that save building the one-item focus list and,
for a column, the result list:

- :data:`ItemEvaluator` ``(item, env) -> collection``: the result on the focus ``[item]``;
- :data:`SingleEvaluator` ``(item, env) -> value``: that result as a column value: ``None``
  when empty, the item when there is one, :class:`MultipleValues` raised when there are more.

Boolean criteria may have a third form, a :data:`Test` ``(item, env) -> bool``: true exactly
when the result on ``[item]`` is ``[True]`` (what a ``where`` filter asks; see :mod:`.criteria`).

Collections returned by any form belong to the caller (they may end up in rows), so they
never alias a list inside the resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Collection = list[Any]


@dataclass(slots=True)
class Env:
    """The resource being flattened and the index of the current forEach/repeat item.

    Not frozen: one Env per nesting level of a view is made once per run and updated in place
    for each resource and item (a fresh object per forEach item costs more than evaluating a
    simple column). Expressions read it during a call and never keep it.
    """

    resource: Any
    row_index: int = 0

    def at(self, row_index: int) -> Env:
        """The same resource at another ``%rowIndex``."""
        return Env(self.resource, row_index)


class MultipleValues(Exception):
    """A :data:`SingleEvaluator` found more than one item."""


Evaluator = Callable[[Collection, Env], Collection]
ItemEvaluator = Callable[[Any, Env], Collection]
SingleEvaluator = Callable[[Any, Env], Any]
Test = Callable[[Any, Env], bool]
