"""One Python function per ViewDefinition: the select tree unrolled into loops.

Interpreting the select tree row by row (walk the nodes, build a dict per select, merge them,
expand the cross product) costs more than evaluating the columns themselves once the columns
are compiled closures. So :func:`generate` writes, once per view, the source of a generator
function that does exactly the work this view needs, and compiles it with :func:`compile`:

- one loop over the resources, the type test and the ``where`` filters inline;
- each column is one call of its expression's single-item form (:mod:`.fhirpath.env`) bound
  to a local variable: ``SingleEvaluator`` for a value column (more than one value is the
  ``collection: false`` error), ``ItemEvaluator`` for a ``collection: true`` one, plus the
  type test of :mod:`.view_types` only where the static type did not settle it;
- ``forEach``/``forEachOrNull``/``repeat`` become ``for`` loops nested in the code of their
  parent select; the columns of a select that always gives one row (plain, no union below)
  are just more local variables; the rows of a select are the cross product of its parts
  (https://sql-on-fhir.org/ig/latest/implementer_guidance.html#processing-algorithm-model),
  evaluated in order, each once: when only the last part gives several rows (the usual
  "columns, then a forEach") it streams in place; otherwise each such part's rows are first
  collected as tuples and the product is nested loops over them; a ``unionAll`` writes the
  code of each branch in turn, each binding the same variables;
- the innermost code yields the row as one dict literal, keys in view column order.

``%rowIndex`` lives in an :class:`~.fhirpath.env.Env` per loop, made once per run and updated
in place for each item, and only for loops whose subtree mentions ``rowIndex``. The empty run
of ``forEachOrNull`` evaluates its select on the empty collection (``[]``) with the collection
forms of the expressions.

Both FHIRPath tiers run through the same generated code; only the evaluators differ. Names
and JSON paths enter the source as ``repr`` literals of validated strings, every evaluator
through the function's globals, so nothing from the ViewDefinition is ever executed as code.
The source is kept (``CompiledView.source``) and registered with :mod:`linecache`, so a
traceback through a view shows the generated line.

With ``invalid_values`` a failure *on the data* spoils one cell instead of the run: a
column whose path fails on its operands (:class:`~dic_connector.errors.FhirPathError`, e.g.
text in arithmetic) or whose value is not of its declared type gets an
:class:`~.view_tree.InvalidValue` ("not computable" / "wrong type", rule ``type: ...``) in
place of its value, and so does a path that gives several values on one resource where the
column keeps one ("several values", rule ``cardinality: one value``: a second ``birthDate``
or a repeated extension in one record spoils that record's cell, and the column's policy
decides, instead of failing a whole site's run; a mapping that is wrong for most records
shows as that rule's count in the run report). A ``where`` or a ``forEach`` that fails stays
an error of the view: which rows a resource gives is the mapping's, not a value's.
"""

from __future__ import annotations

import hashlib
import linecache
from collections.abc import Callable
from typing import Any

from dic_connector.errors import FhirPathError, ViewDefinitionError
from dic_connector.sqlonfhir import view_types
from dic_connector.sqlonfhir.fhirpath import CompiledExpression
from dic_connector.sqlonfhir.fhirpath.env import Collection, Env, ItemEvaluator, MultipleValues
from dic_connector.sqlonfhir.view_tree import Column, InvalidValue, Runner, Select

_MANY = ("the path gives more than one value; declare the column 'collection: true' or "
         "narrow the path")
Emit = Callable[[int], None]


def _many(path: str) -> None:
    raise ViewDefinitionError(_MANY, path) from None


def _one(values: Collection, path: str) -> Any:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    raise ViewDefinitionError(_MANY, path)


def _several() -> InvalidValue:
    """The cell of a one-value column whose path gives several values on one resource."""
    return InvalidValue("several values", "cardinality: one value")


def _one_or_several(values: Collection) -> Any:
    """``_one`` for a view compiled with ``invalid_values``: several values spoil the cell."""
    if not values:
        return None
    return values[0] if len(values) == 1 else _several()


def _mistyped(type_path: str, declared: str | None) -> None:
    raise ViewDefinitionError(f"a value is not of {view_types.describe(declared)}", type_path)


def _check_each(values: Collection, check: Callable[[Any], bool], type_path: str,
                declared: str | None) -> None:
    for value in values:
        if not check(value):
            _mistyped(type_path, declared)


def _wrong_type(declared: str | None) -> InvalidValue:
    """The cell of a value that is not of the column's declared type (or not primitive)."""
    return InvalidValue("wrong type", f"type: {declared or 'a primitive value'}")


def _typed_each(values: Collection, check: Callable[[Any], bool], declared: str | None
                ) -> Collection | InvalidValue:
    """A collection column's values, or its cell's InvalidValue if one is mistyped."""
    return values if all(check(value) for value in values) else _wrong_type(declared)


def _not_computable(error: FhirPathError) -> InvalidValue:
    """The cell of a column whose path failed on the data (what it needed, not the value)."""
    return InvalidValue("not computable",
                        f"type: {error.expected or 'valid'} operand (FHIRPath)")


def _rejected(values: Collection, path: str) -> bool:
    """A ``where`` result other than ``[True]``: skip (empty, false) or error (not boolean)."""
    if not values:
        return True
    if len(values) != 1 or type(values[0]) is not bool:
        raise ViewDefinitionError("must evaluate to a single boolean", path)
    return not values[0]


def _repeat(starts: Collection, recurse: tuple[ItemEvaluator, ...], env: Env) -> Collection:
    """Every item reached from ``starts`` by ``recurse``, depth first, in document order."""
    found: Collection = []

    def walk(items: Collection) -> None:
        for item in items:
            found.append(item)
            for expr in recurse:
                walk(expr(item, env))

    walk(starts)
    return found


class _Writer:
    """Accumulates the generated lines and the globals they refer to."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.lines: list[str] = []
        self.globals: dict[str, Any] = {
            "Env": Env, "MultipleValues": MultipleValues, "InvalidValue": InvalidValue, "_many": _many, "_one": _one,
            "_mistyped": _mistyped, "_check_each": _check_each, "_rejected": _rejected,
            "_repeat": _repeat, "FhirPathError": FhirPathError, "_wrong_type": _wrong_type,
            "_typed_each": _typed_each, "_not_computable": _not_computable,
            "_several": _several, "_one_or_several": _one_or_several,
        }
        self.envs: list[str] = []
        self.column_var = {name: f"c{i}" for i, name in enumerate(names)}
        self._count = 0

    def line(self, indent: int, text: str) -> None:
        self.lines.append("    " * indent + text)

    def fresh(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    def constant(self, value: Any, prefix: str) -> str:
        """A global name for ``value`` (an evaluator, a check, a JSON path)."""
        name = self.fresh(prefix)
        self.globals[name] = value
        return name

    def new_env(self) -> str:
        name = self.fresh("env")
        self.envs.append(name)
        return name


class _Generator:
    def __init__(self, writer: _Writer, invalid_values: bool = False) -> None:
        self.w = writer
        self.invalid_values = invalid_values

    def column(self, column: Column, focus: str, as_list: bool, env: str, indent: int) -> None:
        w, var = self.w, self.w.column_var[column.name]
        path = repr(column.path)
        expr = column.expr
        guarded = self.invalid_values
        if guarded:
            w.line(indent, "try:")
            indent += 1
        if column.collection:
            fn = w.constant(expr.evaluate if as_list else expr.on_item, "o")
            w.line(indent, f"{var} = {fn}({focus}, {env})")
        elif as_list:
            fn = w.constant(expr.evaluate, "e")
            if guarded:
                w.line(indent, f"{var} = _one_or_several({fn}({focus}, {env}))")
            else:
                w.line(indent, f"{var} = _one({fn}({focus}, {env}), {path})")
        else:
            fn = w.constant(expr.single, "s")
            w.line(indent, "try:")
            w.line(indent + 1, f"{var} = {fn}({focus}, {env})")
            w.line(indent, "except MultipleValues:")
            w.line(indent + 1, f"{var} = _several()" if guarded else f"_many({path})")
        if guarded:
            indent -= 1
            w.line(indent, "except FhirPathError as exc:")
            w.line(indent + 1, f"{var} = _not_computable(exc)")
        if column.check is None:
            return
        check = w.constant(column.check, "t")
        where, declared = repr(column.type_path), repr(column.type)
        if guarded:
            w.line(indent, f"if type({var}) is not InvalidValue:")
            indent += 1
        if column.collection:
            if guarded:
                w.line(indent, f"{var} = _typed_each({var}, {check}, {declared})")
            else:
                w.line(indent, f"_check_each({var}, {check}, {where}, {declared})")
            return
        if column.type is None:  # no declared type: anything but a non-primitive value
            w.line(indent, f"if type({var}) is dict:")
        else:
            w.line(indent, f"if {var} is not None and not {check}({var}):")
        if guarded:
            w.line(indent + 1, f"{var} = _wrong_type({declared})")
        else:
            w.line(indent + 1, f"_mistyped({where}, {declared})")

    def items(self, node: Select, focus: str, as_list: bool, env: str, indent: int) -> str:
        """Emit the computation of the items a forEach/forEachOrNull/repeat runs over."""
        w = self.w
        items = w.fresh("items")

        def call(expr: CompiledExpression) -> str:
            fn = w.constant(expr.evaluate if as_list else expr.on_item, "i")
            return f"{fn}({focus}, {env})"

        if node.mode != "repeat":
            w.line(indent, f"{items} = {call(node.iterate[0])}")
            return items
        starts = " + ".join(call(expr) for expr in node.iterate)
        recurse = w.constant(tuple(expr.on_item for expr in node.recurse), "r")
        w.line(indent, f"{items} = _repeat({starts}, {recurse}, {env})")
        return items

    def select(self, node: Select, focus: str, as_list: bool, env: str, indent: int,
               then: Emit) -> None:
        """Emit the rows of ``node`` on ``focus``; ``then`` writes what follows each row."""
        if node.mode == "plain":
            self.body(node, focus, as_list, env, indent, then)
            return
        w = self.w
        items = self.items(node, focus, as_list, env, indent)
        item = w.fresh("x")
        inner = env
        if node.uses_row_index:
            inner = w.new_env()
            index = w.fresh("n")
            w.line(indent, f"{inner}.resource = {env}.resource")
            w.line(indent, f"for {index}, {item} in enumerate({items}):")
            w.line(indent + 1, f"{inner}.row_index = {index}")
        else:
            w.line(indent, f"for {item} in {items}:")
        self.body(node, item, False, inner, indent + 1, then)
        if node.mode == "forEachOrNull":
            w.line(indent, f"if not {items}:")
            if node.uses_row_index:
                w.line(indent + 1, f"{inner}.row_index = 0")
            self.body(node, "[]", True, inner, indent + 1, then)

    def _append(self, rows: str, target: str) -> Emit:
        def emit(indent: int) -> None:
            self.w.line(indent, f"{rows}.append({target})")

        return emit

    def body(self, node: Select, focus: str, as_list: bool, env: str, indent: int,
             then: Emit) -> None:
        """Columns of ``node`` on one focus, then the cross product of its parts."""
        for column in node.columns:
            self.column(column, focus, as_list, env, indent)
        # the parts in order: each nested select, then the union's branches as one part
        parts: list[tuple[Select, ...]] = [(child,) for child in node.selects]
        if node.union:
            parts.append(node.union)
        several = [i for i, part in enumerate(parts) if not part[0].single_row or len(part) > 1]
        if several == [len(parts) - 1]:
            # one part gives several rows and it comes last: it streams, inside no loop
            for part in parts[:-1]:
                self.select(part[0], focus, as_list, env, indent, lambda _: None)
            for branch in parts[-1]:
                self.select(branch, focus, as_list, env, indent, then)
            return
        collected: list[tuple[str, str]] = []
        for i, part in enumerate(parts):
            if i not in several:  # one row: just more variables
                self.select(part[0], focus, as_list, env, indent, lambda _: None)
                continue
            rows = self.w.fresh("rows")
            target = "(" + "".join(f"{self.w.column_var[n]}, " for n in part[0].names) + ")"
            collected.append((rows, target))
            self.w.line(indent, f"{rows} = []")
            for branch in part:
                self.select(branch, focus, as_list, env, indent, self._append(rows, target))
        for rows, target in collected:
            self.w.line(indent, f"for {target} in {rows}:")
            indent += 1
        then(indent)


def generate(resource: str, where: tuple[tuple[CompiledExpression, str], ...], root: Select,
             invalid_values: bool = False) -> tuple[Runner, str]:
    """The row generator of a compiled view, and its source (``invalid_values``: see the
    module docstring)."""
    w = _Writer(root.names)
    gen = _Generator(w, invalid_values)
    body: list[str] = []
    w.lines = body
    w.line(1, "for res in resources:")
    w.line(2, f"if not isinstance(res, dict) or res.get('resourceType') != {resource!r}:")
    w.line(3, "continue")
    w.line(2, "env0.resource = res")
    for expr, path in where:
        if expr.test is not None:  # a direct test: never an error, true for [True]
            w.line(2, f"if not {w.constant(expr.test, 'w')}(res, env0):")
            w.line(3, "continue")
            continue
        fn = w.constant(expr.on_item, "w")
        result = w.fresh("ok")
        w.line(2, f"{result} = {fn}(res, env0)")
        w.line(2, f"if (len({result}) != 1 or {result}[0] is not True) "
                  f"and _rejected({result}, {path!r}):")
        w.line(3, "continue")
    row = "{" + ", ".join(f"{name!r}: {w.column_var[name]}" for name in root.names) + "}"
    gen.select(root, "res", False, "env0", 2, lambda at: w.line(at, f"yield {row}"))
    head = ["def run(resources):", "    env0 = Env(None)",
            *(f"    {env} = Env(None)" for env in w.envs)]
    source = "\n".join([*head, *body]) + "\n"
    # named by content: compiling the same view again reuses its linecache entry
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    filename = f"<ViewDefinition {resource} {digest}>"
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    namespace = dict(w.globals)
    exec(compile(source, filename, "exec"), namespace)
    run: Runner = namespace["run"]
    return run, source
