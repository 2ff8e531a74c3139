"""Validate a SQL-on-FHIR v2 ViewDefinition and compile it into an immutable select tree.

A ViewDefinition (https://sql-on-fhir.org/ig/latest/StructureDefinition-ViewDefinition.html)
is checked once, up front, and every error names the JSON path of the offending element
(``$.select[0].column[1].path``) as :class:`~dic_connector.errors.ViewDefinitionError`:

- ``resource`` is an R4 resource type; ``select`` is a non-empty list;
- each ``constant`` has a ``name`` and exactly one ``value[x]``; ``%name`` must be defined;
- a select has at most one of ``forEach``/``forEachOrNull``/``repeat``; expressions are
  strings that parse as FHIRPath;
- column names are valid, unique across the view, and every ``unionAll`` branch has the same
  columns in the same order (https://sql-on-fhir.org/ig/latest/implementer_guidance.html,
  "ValidateColumns");
- a ``where`` path whose static type is known must be boolean;
- a column's ``type`` names a FHIR type, which the values of its path must have
  (:mod:`.view_types`: checked here when the path's static type is known, else on each value).

Each FHIRPath expression is compiled here, once, with the static type of its focus (the view's
resource type, then the type of each ``forEach`` collection), which is what lets the compiled
tier resolve choice elements below the root. The select tree (:mod:`.view_tree`) is then
turned into one Python function for the whole view (:mod:`.view_codegen`), kept as
:attr:`CompiledView.run`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from dic_connector.errors import FhirPathError, ViewDefinitionError
from dic_connector.sqlonfhir import view_types
from dic_connector.sqlonfhir.fhirpath import CompiledExpression, Scope, compile_expression
from dic_connector.sqlonfhir.fhirpath.env import Collection
from dic_connector.sqlonfhir.fhirpath.types import fhir_type_name, is_resource_type, kind
from dic_connector.sqlonfhir.view_codegen import generate
from dic_connector.sqlonfhir.view_tree import Column, Runner, Select

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_ITERATORS = ("forEach", "forEachOrNull", "repeat")
_SELECT_KEYS = frozenset({"column", "select", "unionAll", *_ITERATORS, "id", "extension",
                          "description"})
_COLUMN_KEYS = frozenset({"name", "path", "type", "collection", "description", "tag", "id",
                          "extension"})


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A validated view: resource type, where filters (with JSON paths), the select tree.

    ``run(resources)`` yields the rows (resources of other types are skipped); ``source`` is
    the Python source it was generated from.
    """

    resource: str
    where: tuple[tuple[CompiledExpression, str], ...]
    root: Select
    scope: Scope
    run: Runner
    source: str

    @property
    def columns(self) -> tuple[str, ...]:
        """Output column names in order."""
        return self.root.names


def _expression(text: Any, focus_type: str | None, scope: Scope, path: str,
                allow_compiled: bool) -> CompiledExpression:
    if not isinstance(text, str) or not text.strip():
        raise ViewDefinitionError("must be a non-empty FHIRPath string", path)
    try:
        return compile_expression(text, focus_type, scope, allow_compiled=allow_compiled)
    except FhirPathError as exc:
        raise ViewDefinitionError(str(exc), path) from exc


def _constants(raw: Any) -> dict[str, tuple[Collection, str | None]]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ViewDefinitionError("must be a list", "$.constant")
    out: dict[str, tuple[Collection, str | None]] = {}
    for i, item in enumerate(raw):
        path = f"$.constant[{i}]"
        if not isinstance(item, dict):
            raise ViewDefinitionError("must be an object", path)
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ViewDefinitionError("needs a name (letters, digits, _)", f"{path}.name")
        if name in out:
            raise ViewDefinitionError(f"constant {name!r} defined twice", f"{path}.name")
        values = [key for key in item if key.startswith("value")]
        if len(values) != 1:
            raise ViewDefinitionError("needs exactly one value[x]", path)
        out[name] = ([item[values[0]]], fhir_type_name(values[0][len("value"):]))
    return out


class _Compiler:
    def __init__(self, scope: Scope, allow_compiled: bool) -> None:
        self.scope = scope
        self.allow_compiled = allow_compiled

    def expr(self, text: Any, focus_type: str | None, path: str) -> CompiledExpression:
        return _expression(text, focus_type, self.scope, path, self.allow_compiled)

    def select(self, raw: Any, focus_type: str | None, path: str) -> Select:
        if not isinstance(raw, dict):
            raise ViewDefinitionError("must be an object", path)
        unknown = sorted(set(raw) - _SELECT_KEYS)
        if unknown:
            raise ViewDefinitionError(f"unknown element {unknown[0]!r}", path)
        modes = [key for key in _ITERATORS if key in raw]
        if len(modes) > 1:
            raise ViewDefinitionError(f"only one of {', '.join(modes)} allowed", path)
        mode = modes[0] if modes else "plain"
        iterate: tuple[CompiledExpression, ...] = ()
        recurse: tuple[CompiledExpression, ...] = ()
        inner_type = focus_type
        if mode in ("forEach", "forEachOrNull"):
            iterate = (self.expr(raw[mode], focus_type, f"{path}.{mode}"),)
            inner_type = iterate[0].type
        elif mode == "repeat":
            iterate, recurse, inner_type = self.repeat(raw["repeat"], focus_type,
                                                       f"{path}.repeat")
        columns = self.columns(raw.get("column"), inner_type, f"{path}.column")
        selects = tuple(self.select(child, inner_type, f"{path}.select[{i}]")
                        for i, child in enumerate(self.list_of(raw, "select", path)))
        union = self.union(self.list_of(raw, "unionAll", path), inner_type, f"{path}.unionAll")
        names = tuple(c.name for c in columns) + tuple(
            n for s in selects for n in s.names) + (union[0].names if union else ())
        uses_row_index = any("rowIndex" in e.text for e in (
            *iterate, *recurse, *(c.expr for c in columns))) or any(
            s.uses_row_index for s in selects + union)
        return Select(mode, iterate, recurse, columns, selects, union, names, uses_row_index)

    @staticmethod
    def list_of(raw: dict[str, Any], key: str, path: str) -> list[Any]:
        value = raw.get(key, [])
        if not isinstance(value, list):
            raise ViewDefinitionError("must be a list", f"{path}.{key}")
        return value

    def repeat(self, raw: Any, focus_type: str | None, path: str
               ) -> tuple[tuple[CompiledExpression, ...], tuple[CompiledExpression, ...],
                          str | None]:
        if not isinstance(raw, list) or not raw:
            raise ViewDefinitionError("must be a non-empty list of FHIRPath strings", path)
        first = tuple(self.expr(text, focus_type, f"{path}[{i}]") for i, text in enumerate(raw))
        element_types = {e.type for e in first if e.type is not None}
        element_type = element_types.pop() if len(element_types) == 1 else None
        rest = tuple(self.expr(text, element_type, f"{path}[{i}]") for i, text in enumerate(raw))
        return first, rest, element_type

    def columns(self, raw: Any, focus_type: str | None, path: str) -> tuple[Column, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise ViewDefinitionError("must be a list", path)
        out: list[Column] = []
        for i, item in enumerate(raw):
            here = f"{path}[{i}]"
            if not isinstance(item, dict):
                raise ViewDefinitionError("must be an object", here)
            unknown = sorted(set(item) - _COLUMN_KEYS)
            if unknown:
                raise ViewDefinitionError(f"unknown element {unknown[0]!r}", here)
            name = item.get("name")
            if not isinstance(name, str) or not _NAME.match(name):
                raise ViewDefinitionError("needs a name (a letter, then letters, digits, _)",
                                          f"{here}.name")
            collection = item.get("collection", False)
            if not isinstance(collection, bool):
                raise ViewDefinitionError("must be true or false", f"{here}.collection")
            expr = self.expr(item.get("path"), focus_type, f"{here}.path")
            out.append(self.typed(Column(name, expr, collection, f"{here}.path"),
                                  item.get("type"), here))
        return tuple(out)

    @staticmethod
    def typed(column: Column, raw_type: Any, here: str) -> Column:
        """The column with its declared type checked against the path's static type."""
        declared = None if raw_type is None else view_types.declared_type(
            raw_type, f"{here}.type")
        type_path = f"{here}.path" if declared is None else f"{here}.type"
        static = column.expr.type
        fits = view_types.compatible(static, declared)
        if fits is False and declared is None:
            raise ViewDefinitionError(
                f"the path gives {static} values; a column of a non-primitive type must "
                "declare it in 'type'", type_path)
        if fits is False:
            raise ViewDefinitionError(f"the path gives {static} values, not {declared}",
                                      type_path)
        check = None if fits else view_types.value_check(declared)
        return Column(column.name, column.expr, column.collection, column.path, declared,
                      check, type_path)

    def union(self, raw: list[Any], focus_type: str | None, path: str) -> tuple[Select, ...]:
        branches: list[Select] = []
        for i, item in enumerate(raw):
            branch = self.select(item, focus_type, f"{path}[{i}]")
            if branches and branch.names != branches[0].names:
                raise ViewDefinitionError(
                    f"unionAll branches must have the same columns in the same order "
                    f"({list(branches[0].names)} vs {list(branch.names)})", f"{path}[{i}]")
            if branches:
                first, this = _declared_types(branches[0]), _declared_types(branch)
                for name in branch.names:
                    if None not in (first[name], this[name]) and first[name] != this[name]:
                        raise ViewDefinitionError(
                            f"column {name!r} is of type {this[name]} here and "
                            f"{first[name]} in the first branch", f"{path}[{i}]")
            branches.append(branch)
        return tuple(branches)

    @staticmethod
    def check_unique(root: Select, path: str) -> None:
        seen: set[str] = set()
        for name in root.names:
            if name in seen:
                raise ViewDefinitionError(f"column name {name!r} is used twice", path)
            seen.add(name)


def _declared_types(node: Select) -> dict[str, str | None]:
    """The declared type of every column of ``node`` (the first union branch's for a union)."""
    out = {c.name: c.type for c in node.columns}
    for child in (*node.selects, *node.union[:1]):
        out.update(_declared_types(child))
    return out


def compile_view(view: Any, *, allow_compiled: bool = True,
                 invalid_values: bool = False) -> CompiledView:
    """Validate ``view`` and compile all its expressions; ViewDefinitionError if invalid.

    ``allow_compiled=False`` evaluates every expression with fhirpathpy (for comparisons).
    ``invalid_values=True``: a column's value that its path cannot compute from the data,
    or that is not of its declared type, is an :class:`~.view_tree.InvalidValue` in the
    row instead of an error of the run (:mod:`.view_codegen`).
    """
    if not isinstance(view, dict):
        raise ViewDefinitionError("a ViewDefinition must be a JSON object", "$")
    resource = view.get("resource")
    if not isinstance(resource, str) or not resource:
        raise ViewDefinitionError("resource is required", "$.resource")
    if not is_resource_type(resource):
        raise ViewDefinitionError("not an R4 resource type", "$.resource")
    selects = view.get("select")
    if not isinstance(selects, list) or not selects:
        raise ViewDefinitionError("select must be a non-empty list", "$.select")
    scope = Scope(_constants(view.get("constant")), resource)
    compiler = _Compiler(scope, allow_compiled)
    if len(selects) == 1 and isinstance(selects[0], dict) and not any(
            key in selects[0] for key in _ITERATORS):
        root = compiler.select(selects[0], resource, "$.select[0]")
    else:
        root = compiler.select({"select": selects}, resource, "$")
    compiler.check_unique(root, "$.select")
    where_raw = view.get("where", [])
    if not isinstance(where_raw, list):
        raise ViewDefinitionError("must be a list", "$.where")
    where: list[tuple[CompiledExpression, str]] = []
    for i, item in enumerate(where_raw):
        path = f"$.where[{i}].path"
        if not isinstance(item, dict):
            raise ViewDefinitionError("must be an object with a path", f"$.where[{i}]")
        expr = compiler.expr(item.get("path"), resource, path)
        if expr.type is not None and kind(expr.type) != "boolean":
            raise ViewDefinitionError(f"must be boolean, is {expr.type}", path)
        where.append((expr, path))
    run, source = generate(resource, tuple(where), root, invalid_values)
    return CompiledView(resource, tuple(where), root, scope, run, source)
