"""The select tree: a validated ViewDefinition as immutable nodes, what codegen turns into code.

:mod:`.view_compile` builds it (validating the view and compiling every FHIRPath expression
once) and :mod:`.view_codegen` writes one Python function from it; both build on this module
only. A :class:`Select` is one ``select`` element of the ViewDefinition
(https://sql-on-fhir.org/ig/latest/StructureDefinition-ViewDefinition.html): its iteration
mode (``forEach``, ``forEachOrNull``, ``repeat`` or none) and the expressions that drive it,
its :class:`Column` list, its nested selects and its ``unionAll`` branches, and the output
column names of its subtree in view order. A :data:`Row` is one output row, column name to
value; a :data:`Runner` maps resources to rows. A view compiled with ``invalid_values``
puts an :class:`InvalidValue` in place of a value its column cannot give (the path fails on
the data, or the value is not of the declared type), so one bad value spoils one cell, not
the run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from dic_connector.sqlonfhir.fhirpath import CompiledExpression

Row = dict[str, Any]
Runner = Callable[[Iterable[Any]], Iterator[Row]]


class InvalidValue(Exception):
    """A value that breaks a rule: its *value class* ("wrong type", "above maximum", ...) and
    the rule broken ("type: decimal", "max 110"), never the value itself, so it can be logged.

    Raised by the mapping's value rules (:mod:`dic_connector.mapping.columns`) and put in a
    row's cell where a view compiled with ``invalid_values`` cannot give a value. Two are
    equal when class and rule are; it pickles as both (rows come back from worker processes).
    """

    def __init__(self, value_class: str, rule: str) -> None:
        super().__init__(f"{value_class} ({rule})")
        self.value_class = value_class
        self.rule = rule

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, InvalidValue) and self.value_class == other.value_class
                and self.rule == other.rule)

    def __hash__(self) -> int:
        return hash((self.value_class, self.rule))

    def __reduce__(self) -> tuple[type[InvalidValue], tuple[str, str]]:
        return type(self), (self.value_class, self.rule)


@dataclass(frozen=True, slots=True)
class Column:
    """One output column: its name, compiled path, and whether it keeps a whole collection."""

    name: str
    expr: CompiledExpression
    collection: bool
    path: str  #: JSON path of the column's ``path`` element, for run-time errors
    type: str | None = None  #: the declared FHIR type, if any
    #: the run-time test of each value, when the path's static type does not settle it
    check: Callable[[Any], bool] | None = None
    type_path: str = ""  #: JSON path of the ``type`` element (of ``path`` when undeclared)


@dataclass(frozen=True, slots=True)
class Select:
    """A select node. ``mode``: plain, forEach, forEachOrNull or repeat.

    ``iterate`` holds the forEach expression, or for repeat the expressions applied to the
    focus (``iterate``) and to every element found (``recurse``).
    """

    mode: str
    iterate: tuple[CompiledExpression, ...]
    recurse: tuple[CompiledExpression, ...]
    columns: tuple[Column, ...]
    selects: tuple[Select, ...]
    union: tuple[Select, ...]
    names: tuple[str, ...]
    #: whether any expression in this subtree may read %rowIndex (else the items of this
    #: select need no index of their own)
    uses_row_index: bool = True

    @property
    def single_row(self) -> bool:
        """Whether the select always gives exactly one row (no iteration, no union below)."""
        return self.mode == "plain" and not self.union and all(
            child.single_row for child in self.selects)
