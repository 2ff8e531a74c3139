"""Fused navigation: a whole path in one generated function.

``extension(url).extension('ombCategory').value.ofType(Coding).code.first()`` is five FHIRPath
steps; compiled one closure per step it would build five intermediate lists and make five
calls per row. Here any run of member access (http://hl7.org/fhirpath/N1/#path-selection),
``extension(url)`` (https://hl7.org/fhir/R4/fhirpath.html#functions: every extension with that
url), ``choice.ofType(T)`` (https://hl7.org/fhir/R4/formats.html#choice: the JSON key
``choiceT``) and ``where(criterion)`` with a direct test (:mod:`.criteria`:
``coding.where(system = %loinc)``) becomes a tuple of :class:`Step`, with ``first()`` at the
end folded in as well.

:func:`walker` turns the steps into the source of one Python function, unrolled into nested
loops, one per step: no list per intermediate step, no loop over the steps, and single-value
forms that stop at the first value (``first()``) or at the second (more than one). Depth-first
nested loops visit the values in the order the step-by-step definition lists them (by the
position of each ancestor, then of the value itself). :func:`walk` starts from a focus
collection; :func:`walk_item` and :func:`walk_single` from one item (the single-item forms of
:mod:`.env`). Keys and urls enter the source as ``repr`` literals, tests through the
function's globals.

:func:`chain` reads the steps off the AST at compile time. A base that is not navigation, and
the criterion of ``where``, are compiled through the :class:`~.compile_context.Compiler` the
caller passes in (the dispatch of :mod:`.compiler`, which sits above this module).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dic_connector.sqlonfhir.fhirpath import parser as ast
from dic_connector.sqlonfhir.fhirpath import types
from dic_connector.sqlonfhir.fhirpath.compile_context import (
    Compiler,
    Scope,
    Unsupported,
    constant_string,
    identity,
    type_argument,
)
from dic_connector.sqlonfhir.fhirpath.env import (
    Collection,
    Env,
    Evaluator,
    ItemEvaluator,
    MultipleValues,
    SingleEvaluator,
    Test,
)


@dataclass(frozen=True, slots=True)
class Step:
    """One navigation step.

    ``keys``: the JSON keys read from each dict (several for a choice element without
    ``ofType``); ``url``: for ``extension(url)`` (``keys`` is ``("extension",)``), the url the
    extensions must carry; ``test``: for ``where(criterion)`` (no keys), the direct test each
    item must pass.
    """

    keys: tuple[str, ...] = ()
    url: str | None = None
    test: Test | None = None


Chain = tuple[Evaluator, str | None, tuple[Step, ...]]
_FORMS = ("focus", "focus_first", "item", "single", "single_first")
_NOTHING = object()


class _Source:
    def __init__(self, leaf: list[str]) -> None:
        self.lines: list[str] = []
        self.leaf = leaf  #: code run on each value found, ``{found}`` standing for it
        self.globals: dict[str, Any] = {"_NOTHING": _NOTHING, "MultipleValues": MultipleValues}

    def add(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def values(self, steps: tuple[Step, ...], var: str, indent: int, is_dict: bool = False
               ) -> None:
        """Code visiting every value reached from the value ``var`` by ``steps``."""
        if not steps:
            for line in self.leaf:
                self.add(indent, line.format(found=var))
            return
        step, depth = steps[0], len(self.lines)
        if step.test is not None:
            test = f"t{depth}"
            self.globals[test] = step.test
            self.add(indent, f"if {test}({var}, env):")
            self.values(steps[1:], var, indent + 1, is_dict)
            return
        if not is_dict:
            self.add(indent, f"if type({var}) is dict:")
            indent += 1
        for key in step.keys:
            value, each = f"v{depth}", f"a{depth}"
            self.add(indent, f"{value} = {var}.get({key!r})")
            if len(steps) == 1 and step.url is None:
                # the last key: no loop for the usual scalar value
                self.add(indent, f"if type({value}) is list:")
                self.add(indent + 1, f"for {each} in {value}:")
                self.add(indent + 2, f"if {each} is not None:")
                self.values((), each, indent + 3)
                self.add(indent, f"elif {value} is not None:")
                self.values((), value, indent + 1)
                continue
            self.add(indent, f"if {value} is not None:")
            self.add(indent + 1, f"for {each} in ({value} if type({value}) is list "
                                 f"else ({value},)):")
            if step.url is None and steps[1].test is None:  # the next key step tests dict
                self.values(steps[1:], each, indent + 2)
                continue
            if step.url is None:
                self.add(indent + 2, f"if {each} is not None:")
                self.values(steps[1:], each, indent + 3)
                continue
            self.add(indent + 2, f"if type({each}) is dict and {each}.get('url') == "
                                 f"{step.url!r}:")
            self.values(steps[1:], each, indent + 3, is_dict=True)


def _walker_source(steps: tuple[Step, ...], form: str) -> tuple[str, dict[str, Any]]:
    leaf = {
        "focus": ["out.append({found})"], "item": ["out.append({found})"],
        "focus_first": ["return [{found}]"], "single_first": ["return {found}"],
        "single": ["if result is not _NOTHING:", "    raise MultipleValues",
                   "result = {found}"],
    }[form]
    source = _Source(leaf)
    if form in ("focus", "focus_first"):
        source.add(0, "def walker(focus, env):")
        source.add(1, "out = []")
        source.add(1, "for x in focus:")
        source.values(steps, "x", 2)
    else:
        source.add(0, "def walker(x, env):")
        source.add(1, "out = []" if form == "item" else "result = _NOTHING")
        source.values(steps, "x", 1)
    source.add(1, {"focus": "return out", "item": "return out", "focus_first": "return []",
                   "single_first": "return None",
                   "single": "return None if result is _NOTHING else result"}[form])
    return "\n".join(source.lines) + "\n", source.globals


@functools.lru_cache(maxsize=4096)  # bounded: steps with tests are new for each compilation
def walker(steps: tuple[Step, ...], form: str) -> Callable[[Any, Env], Any]:
    """The generated walker of ``steps`` in one of five forms.

    ``focus``: collection from a focus collection (an :data:`.env.Evaluator`); ``focus_first``:
    the same, first value only; ``item``: collection from one item (an
    :data:`.env.ItemEvaluator`); ``single``: one value from one item (a
    :data:`.env.SingleEvaluator`); ``single_first``: the first value or None.
    """
    assert form in _FORMS and steps
    source, namespace = _walker_source(steps, form)
    exec(compile(source, f"<path {form}>", "exec"), namespace)
    function: Callable[[Any, Env], Any] = namespace["walker"]
    return function


def walk(start: Evaluator, steps: tuple[Step, ...], first: bool = False) -> Evaluator:
    """One closure for ``start`` followed by ``steps`` (then ``first()`` if asked)."""
    if not steps:
        return (lambda focus, env: start(focus, env)[:1]) if first else start
    steps_from: Evaluator = walker(steps, "focus_first" if first else "focus")
    if start is identity:
        return steps_from

    def run(focus: Collection, env: Env) -> Collection:
        return steps_from(start(focus, env), env)

    return run


def walk_item(steps: tuple[Step, ...]) -> ItemEvaluator:
    """``walk(identity, steps)`` on the focus ``[item]``, without building that focus."""
    return walker(steps, "item")


def walk_single(steps: tuple[Step, ...], first: bool = False) -> SingleEvaluator:
    """:func:`walk_item` as one value (see :data:`.env.SingleEvaluator`); ``first()`` folded."""
    return walker(steps, "single_first" if first else "single")


def _base(base: ast.Node | None, focus_type: str | None, scope: Scope,
          compiler: Compiler) -> Chain:
    if base is None:
        return identity, focus_type, ()
    found = chain(base, focus_type, scope, compiler)
    if found is not None:
        return found
    start, start_type = compiler.compile_node(base, focus_type, scope)
    return start, start_type, ()


def chain(node: ast.Node, focus_type: str | None, scope: Scope,
          compiler: Compiler) -> Chain | None:
    """(start, type, steps) when ``node`` ends in a navigation step, else None."""
    if isinstance(node, ast.Member):
        start, base_type, steps = _base(node.base, focus_type, scope, compiler)
        if (node.base is None and base_type is not None and node.name == base_type
                and types.is_resource_type(node.name)):
            name = node.name

            def of_resource_type(focus: Collection, env: Env) -> Collection:
                return [r for r in focus if type(r) is dict and r.get("resourceType") == name]

            return of_resource_type, base_type, ()
        info = types.member(base_type, node.name)
        if info is None:
            raise Unsupported(f"member {node.name} on {base_type}")
        if isinstance(info, types.Plain):
            return start, info.type, (*steps, Step((info.key,)))
        only = info.options[0][1] if len(info.options) == 1 else None
        return start, only, (*steps, Step(tuple(key for key, _ in info.options)))
    if not isinstance(node, ast.Call) or len(node.args) != 1:
        return None
    if node.name == "extension":
        url = constant_string(node.args[0], scope)
        start, base_type, steps = _base(node.base, focus_type, scope, compiler)
        if base_type is None or base_type in types.PRIMITIVE_TYPES:
            raise Unsupported("extension() on a primitive or untyped value")
        return start, "Extension", (*steps, Step(("extension",), url))
    if node.name == "ofType" and isinstance(node.base, ast.Member):
        wanted = type_argument(node.args[0])
        start, base_type, steps = _base(node.base.base, focus_type, scope, compiler)
        info = types.member(base_type, node.base.name)
        if not isinstance(info, types.Choice):
            return None
        for key, fhir_type in info.options:
            if fhir_type == wanted:
                return start, fhir_type, (*steps, Step((key,)))
        raise Unsupported(f"{node.base.name} has no option {wanted}")
    if node.name == "where" and node.base is not None:
        return _where(node, focus_type, scope, compiler)
    return None


def _where(node: ast.Call, focus_type: str | None, scope: Scope,
           compiler: Compiler) -> Chain | None:
    """``path.where(criterion)`` as a filter step, when the criterion has a direct test."""
    start, base_type, steps = _base(node.base, focus_type, scope, compiler)
    # as compile_calls does
    _, criterion_type = compiler.compile_node(node.args[0], base_type, scope)
    if types.kind(criterion_type) != "boolean":
        raise Unsupported("where criterion is not typed boolean")
    test = compiler.compile_test(node.args[0], base_type, scope)
    if test is None:
        return None
    return start, base_type, (*steps, Step(test=test))


def steps_from_focus(node: ast.Node | None, focus_type: str | None, scope: Scope,
                     compiler: Compiler) -> tuple[Step, ...] | None:
    """The navigation steps of ``node`` when it is a path starting at the focus item.

    ``()`` for no node (the focus itself); None when ``node`` is not such a path (or not in
    the compiled subset).
    """
    if node is None:
        return ()
    try:
        found = chain(node, focus_type, scope, compiler)
    except Unsupported:
        return None
    if found is None or not found[2]:
        return None
    start, _, steps = found
    return steps if start is identity else None
