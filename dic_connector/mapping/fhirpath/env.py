"""What an expression sees at run time besides its input: the resource and ``%rowIndex``.

Both tiers evaluate ``(focus, env) -> collection``: ``focus`` is the input collection (a list of
JSON values as parsed from FHIR JSON, https://hl7.org/fhir/R4/json.html), ``env`` the
per-row context. ViewDefinition constants are bound at compile time, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Collection = list[Any]


@dataclass(slots=True)
class Env:
    """The resource being flattened and the index of the current forEach/repeat item.

    Not frozen only because a frozen dataclass's ``__init__`` costs three times as much, and
    one Env is made per resource and per forEach item; treat it as immutable.
    """

    resource: Any
    row_index: int = 0

    def at(self, row_index: int) -> Env:
        """The same resource at another ``%rowIndex``."""
        return Env(self.resource, row_index)


Evaluator = Callable[[Collection, Env], Collection]
