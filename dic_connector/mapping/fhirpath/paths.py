"""Fused navigation: a whole path in one closure.

``extension(url).extension('ombCategory').value.ofType(Coding).code.first()`` is five FHIRPath
steps; compiled one closure per step it would build five intermediate lists and make five
calls per row. Here any run of member access (http://hl7.org/fhirpath/N1/#path-selection),
``extension(url)`` (https://hl7.org/fhir/R4/fhirpath.html#functions: every extension with that
url) and ``choice.ofType(T)`` (https://hl7.org/fhir/R4/formats.html#choice: the JSON key
``choiceT``) becomes a list of steps, walked by one closure, with ``first()`` at the end
folded in as well.

A step is ``(keys, url)``: the JSON keys to read from each dict (several for a choice element
without ``ofType``), and, for ``extension(url)``, the url the found extensions must carry.
"""

from __future__ import annotations

from dic_connector.mapping.fhirpath import parser as ast
from dic_connector.mapping.fhirpath import types
from dic_connector.mapping.fhirpath.compiler import (
    Scope,
    Unsupported,
    compile_node,
    constant_string,
    identity,
    type_argument,
)
from dic_connector.mapping.fhirpath.env import Collection, Env, Evaluator

Step = tuple[tuple[str, ...], str | None]
Chain = tuple[Evaluator, str | None, tuple[Step, ...]]


def _one_key(key: str) -> Evaluator:
    """``name`` on the focus, with a fast path for the usual single-item focus."""

    def run(focus: Collection, env: Env) -> Collection:
        if len(focus) == 1:
            item = focus[0]
            if type(item) is not dict:
                return []
            value = item.get(key)
            if value is None:
                return []
            if type(value) is list:
                # a copy: results may end up in rows, and rows must not alias the resource
                return list(value) if None not in value else [v for v in value if v is not None]
            return [value]
        return _walk_steps(focus, (((key,), None),))

    return run


def _walk_steps(items: Collection, steps: tuple[Step, ...]) -> Collection:
    for keys, url in steps:
        out: Collection = []
        if url is not None:  # extension(url): keys is ("extension",)
            key = keys[0]
            for item in items:
                if type(item) is dict:
                    value = item.get(key)
                    if type(value) is list:
                        for v in value:
                            if type(v) is dict and v.get("url") == url:
                                out.append(v)
                    elif type(value) is dict and value.get("url") == url:
                        out.append(value)
        else:
            for item in items:
                if type(item) is not dict:
                    continue
                for key in keys:
                    value = item.get(key)
                    if value is None:
                        continue
                    if type(value) is list:
                        out.extend(value if None not in value else
                                   [v for v in value if v is not None])
                    else:
                        out.append(value)
        if not out:
            return out
        items = out
    return items


def walk(start: Evaluator, steps: tuple[Step, ...], first: bool = False) -> Evaluator:
    """One closure for ``start`` followed by ``steps`` (then ``first()`` if asked)."""
    if not steps:
        return (lambda focus, env: start(focus, env)[:1]) if first else start
    if len(steps) == 1 and steps[0][1] is None and len(steps[0][0]) == 1 \
            and start is identity and not first:
        return _one_key(steps[0][0][0])
    if all(url is None and len(keys) == 1 for keys, url in steps):
        single = tuple(keys[0] for keys, _ in steps)

        def plain(focus: Collection, env: Env) -> Collection:
            items = focus if start is identity else start(focus, env)
            for key in single:
                out: Collection = []
                for item in items:
                    if type(item) is dict:
                        value = item.get(key)
                        if value is None:
                            continue
                        if type(value) is list:
                            out.extend(value if None not in value else
                                       [v for v in value if v is not None])
                        else:
                            out.append(value)
                if not out:
                    return out
                items = out
            return items[:1] if first else items

        return plain

    def general(focus: Collection, env: Env) -> Collection:
        items = _walk_steps(focus if start is identity else start(focus, env), steps)
        return items[:1] if first else items

    return general


def _base(base: ast.Node | None, focus_type: str | None, scope: Scope) -> Chain:
    if base is None:
        return identity, focus_type, ()
    found = chain(base, focus_type, scope)
    if found is not None:
        return found
    start, start_type = compile_node(base, focus_type, scope)
    return start, start_type, ()


def chain(node: ast.Node, focus_type: str | None, scope: Scope) -> Chain | None:
    """(start, type, steps) when ``node`` ends in a navigation step, else None."""
    if isinstance(node, ast.Member):
        start, base_type, steps = _base(node.base, focus_type, scope)
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
            return start, info.type, (*steps, ((info.key,), None))
        only = info.options[0][1] if len(info.options) == 1 else None
        return start, only, (*steps, (tuple(key for key, _ in info.options), None))
    if not isinstance(node, ast.Call) or len(node.args) != 1:
        return None
    if node.name == "extension":
        url = constant_string(node.args[0], scope)
        start, base_type, steps = _base(node.base, focus_type, scope)
        if base_type is None or base_type in types.PRIMITIVE_TYPES:
            raise Unsupported("extension() on a primitive or untyped value")
        return start, "Extension", (*steps, (("extension",), url))
    if node.name == "ofType" and isinstance(node.base, ast.Member):
        wanted = type_argument(node.args[0])
        start, base_type, steps = _base(node.base.base, focus_type, scope)
        info = types.member(base_type, node.base.name)
        if not isinstance(info, types.Choice):
            return None
        for key, fhir_type in info.options:
            if fhir_type == wanted:
                return start, fhir_type, (*steps, ((key,), None))
        raise Unsupported(f"{node.base.name} has no option {wanted}")
    return None
