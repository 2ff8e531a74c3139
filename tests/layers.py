"""The layer order a package's docstring declares, read from the source and checked.

Every package's docstring lists its modules and subpackages "in dependency order": each
bullet ``- ``name``  ...`` is one layer, lowest first, and a layer may import only layers
listed before it. A bullet without a name of its own, followed by indented ``- ``name``
bullets, is one layer of mutually independent members (none imports another); that is how
``dic_connector`` says that the connector, the client and the node never import each other.

The rule is applied at the common ancestor of each import: for ``a.b.x`` importing
``a.c.y``, ``a``'s list must put ``c`` below ``b``. Imports are read with :mod:`ast`,
wherever they stand (module level, inside a function, under ``TYPE_CHECKING``), so a cycle
hidden behind a function-level import is a violation too. A module may not import its own
package's ``__init__`` unless that ``__init__`` imports nothing of the package (it would
run the modules that are still being imported); ``__main__`` modules stand above every
layer of their package.

:func:`import_cycles` reports strongly connected components of the import graph as Python
executes it (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__`` first).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_ORDER_LINE = re.compile(r"dependency order")
_LAYER = re.compile(r"^- ``(\w+)``")
_GROUP = re.compile(r"^- (?!``)")
_MEMBER = re.compile(r"^\s+- ``(\w+)``")


@dataclass(frozen=True)
class Module:
    """One module or package of the tree being checked."""

    name: str  #: dotted name, e.g. ``dic_connector.node.store.audit``
    path: Path
    is_package: bool


@dataclass(frozen=True)
class Import:
    """``source`` imports ``target`` (both modules of the tree) at ``line``."""

    source: str
    target: str
    line: int


def discover(root: Path, package: str) -> dict[str, Module]:
    """Every module and package under ``root/package``, by dotted name."""
    modules: dict[str, Module] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            modules[".".join(parts[:-1])] = Module(".".join(parts[:-1]), path, True)
        else:
            modules[".".join(parts)] = Module(".".join(parts), path, False)
    return modules


def imports(modules: dict[str, Module]) -> Iterator[Import]:
    """The imports between modules of the tree, wherever in the file they stand."""
    for module in modules.values():
        tree = ast.parse(module.path.read_text(), filename=str(module.path))
        here = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[:len(here) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                for alias in node.names:
                    # ``from pkg import sub`` imports the submodule when there is one
                    targets.append(f"{source}.{alias.name}" if f"{source}.{alias.name}" in
                                   modules else source)
            for target in dict.fromkeys(targets):
                if target in modules and target != module.name:
                    yield Import(module.name, target, node.lineno)


def declared_layers(docstring: str) -> list[list[str]]:
    """The layers a package docstring lists, lowest first; [] when it lists none."""
    lines = docstring.splitlines()
    start = next((i for i, line in enumerate(lines) if _ORDER_LINE.search(line)), None)
    if start is None:
        return []
    layers: list[list[str]] = []
    group: list[str] | None = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        if (match := _LAYER.match(line)) is not None:
            group = None
            layers.append([match.group(1)])
        elif _GROUP.match(line):
            group = []
            layers.append(group)
        elif group is not None and (match := _MEMBER.match(line)) is not None:
            group.append(match.group(1))
        elif layers and not line.startswith(" "):
            break  # the first unindented text after the list ends it
    return [layer for layer in layers if layer]


def _docstring(module: Module) -> str:
    tree = ast.parse(module.path.read_text(), filename=str(module.path))
    return ast.get_docstring(tree, clean=False) or ""


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def check_layers(root: Path, package: str) -> list[str]:
    """Every way the tree under ``root/package`` breaks its declared layers (empty: none)."""
    modules = discover(root, package)
    found = list(imports(modules))
    problems: list[str] = []
    rank: dict[str, dict[str, int]] = {}
    for module in (m for m in modules.values() if m.is_package):
        layers = declared_layers(_docstring(module))
        children = {name.rsplit(".", 1)[1] for name in modules
                    if name.rsplit(".", 1)[0] == module.name and "." in name}
        children.discard("__main__")
        listed = [name for layer in layers for name in layer]
        if missing := sorted(children - set(listed)):
            problems.append(f"{module.name}: its docstring's dependency order does not list "
                            f"{missing}")
        if unknown := sorted(set(listed) - children):
            problems.append(f"{module.name}: its docstring lists {unknown}, which do not exist")
        rank[module.name] = {name: i for i, layer in enumerate(layers) for name in layer}
    imports_package = {imp.source for imp in found
                       if modules[imp.source].is_package and imp.target.startswith(
                           imp.source + ".")}
    for imp in found:
        where = f"{imp.source} (line {imp.line}) imports {imp.target}"
        if imp.target in _ancestors(imp.source):
            if imp.target in imports_package:
                problems.append(f"{where}: its own package, whose __init__ imports the package's "
                                "modules; import the module that defines the name instead")
            continue
        if imp.source in _ancestors(imp.target):
            continue  # a package's __init__ re-exporting its own modules
        source, target = imp.source.split("."), imp.target.split(".")
        common = 0
        while source[common] == target[common]:
            common += 1
        parent = ".".join(source[:common])
        lower, upper = target[common], source[common]
        if upper == "__main__":
            continue
        order = rank.get(parent, {})
        if lower not in order or upper not in order:
            continue  # reported above as not listed
        if order[lower] >= order[upper]:
            relation = "the same layer as" if order[lower] == order[upper] else "above"
            problems.append(f"{where}: in {parent}, '{lower}' is {relation} '{upper}'")
    return problems


def import_cycles(root: Path, package: str) -> list[list[str]]:
    """Import cycles (each a sorted list of modules) in the tree under ``root/package``."""
    modules = discover(root, package)
    edges: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports(modules):
        own = set(_ancestors(imp.source))
        for target in [*_ancestors(imp.target), imp.target]:
            if target not in own and target != imp.source and target in modules:
                edges[imp.source].add(target)
    return _strongly_connected(edges)


def _strongly_connected(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); components with more than one member."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out
