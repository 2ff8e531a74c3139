"""YAML loading that remembers where every value came from.

Mapping files are written by people, so an error must point at a line. PyYAML's
:func:`yaml.compose` keeps a start mark (line, column) on every node; this module walks the
node tree once and records, for each JSON path (a tuple of keys and list indices), the
1-based line of the value at that path. The same node tree is then constructed into plain
Python data, so the data and the line index can never disagree.

Two YAML 1.1 conveniences are switched off because they silently change meaning in a
mapping file:

- unquoted ``2020-01-01`` would become a :class:`datetime.date`; here it stays a string,
  exactly as it would be in the JSON form of a ViewDefinition (SQL-on-FHIR v2 is JSON);
- a key given twice would keep the last value; here it is an error naming both lines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dic_connector.errors import MappingFileError

JsonPath = tuple[str | int, ...]


class _NoDateLoader(yaml.SafeLoader):
    """SafeLoader without the implicit timestamp resolver (dates stay strings)."""


_NoDateLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def format_path(path: JsonPath) -> str:
    """JSON path in the ``$.columns[3].scale`` notation used in every message."""
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@dataclass(frozen=True)
class LocatedDocument:
    """A parsed YAML document plus the line of every JSON path in it."""

    data: Any
    lines: Mapping[JsonPath, int]
    file: str

    def line_of(self, path: JsonPath) -> int:
        """Line of the deepest recorded prefix of ``path`` (1 when nothing matches)."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return 1

    def error(self, path: JsonPath, rule: str) -> MappingFileError:
        """A :class:`MappingFileError` naming file, line, JSON path and the rule broken."""
        return MappingFileError(
            f"{self.file}:{self.line_of(path)}: {format_path(path)}: {rule}"
        )


def _index(node: yaml.Node, path: JsonPath, lines: dict[JsonPath, int], file: str) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise MappingFileError(
                    f"{file}:{line}: {format_path((*path, key))}: duplicate key "
                    f"(first given on line {seen[key]})"
                )
            seen[key] = line
            _index(value_node, (*path, key), lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index(item, (*path, i), lines, file)


def load_located(text: str, file: str) -> LocatedDocument:
    """Parse one YAML document, raising :class:`MappingFileError` on syntax errors."""
    loader = _NoDateLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise MappingFileError(f"{file}:1: $: the file is empty")
        lines: dict[JsonPath, int] = {}
        _index(node, (), lines, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise MappingFileError(f"{file}:{line}: $: not valid YAML ({exc.problem})") from None
    finally:
        loader.dispose()
    return LocatedDocument(data=data, lines=lines, file=file)


def read_located(path: str | Path) -> LocatedDocument:
    """Read and parse a YAML file; the file name in messages is the path as given."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise MappingFileError(f"{path}:1: $: cannot read the file ({exc.strerror})") from None
    return load_located(text, str(path))
