"""Filters: a predicate over typed columns, parsed from a JSON AST, computed as a 0/1 share.

Every recipe accepts ``"filter"``: the rows it computes over are those where its column is
present *and* the filter holds (:meth:`~dic_connector.node.analyses.base.Analysis.gate`).
A filter is a JSON tree (never a string to ``eval``), :data:`FILTER_SCHEMA` in JSON Schema::

    {"op": ">=", "column": "bed10", "value": 80}            ==, !=, <, <=, >, >=
    {"op": "==", "column": "ecog", "value": "2"}            a categorical level (==, !=)
    {"op": "==", "column": "smoker", "value": true}         a boolean (==, !=)
    {"op": "<", "column": "diagnosis", "value": "2020-01-01"}  a date: an ISO date (when the
                                                             manifest gives its origin, in
                                                             days) or a number in its unit
    {"op": "in", "column": "ecog", "values": ["0", "1"]}    levels, or numbers
    {"op": "is_present", "column": "ecog"}
    {"op": "&", "args": [f, g, ...]}   {"op": "|", "args": [f, g, ...]}   {"op": "!", "arg": f}

:func:`parse_filter` checks a tree against the dataset manifest (:mod:`.manifest`): the
column exists and its kind allows the operator and the value; a level is declared; a number
lies in the declared range (when there is one) and, for ``==``/``!=``/``in``, is a multiple
of the column's fixed-point step; at most :data:`MAX_DEPTH` levels and :data:`MAX_NODES`
nodes. Errors name the place in the tree (``filter.args[1].value``).

**Semantics.** A comparison, ``in`` and a boolean or level test hold only where the column is
present: a missing value never matches, ``!=`` included (``x != 3`` is "present and not 3").
``is_present`` reads the ``__present`` flag (always true for a column without one). ``!`` is
the complement over all rows: ``!(x > 3)`` also holds where ``x`` is missing.

**Under MPC** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3), the filter is an
arithmetic 0/1 share per row (:func:`evaluate`), and nothing is opened:

- ``x < c`` / ``x >= c`` with a public c compare encoded integers (value * 10^scale; ``<=``
  and ``>`` become ``<`` / ``>=`` with c rounded to the next step, exactly): the sign bit of
  x - c (:func:`mpc.protocols.compare.sign_bits`, ABY3 §5.3). That is exact while x - c
  cannot wrap the 64-bit ring, which the declared range shows; without one, the sign of x
  joins in (for c >= 0: [x < c] = msb(x) | msb(x - c); for c < 0: msb(x) & msb(x - c)), one
  AND round more, exact for every 64-bit x.
- ``x == c`` is a zero test of x - c (:func:`mpc.protocols.compare.zero_bits`); ``in`` over
  numbers sums such tests (distinct values exclude each other).
- A categorical level is its one-hot column, a boolean its own value (free, local); ``in``
  over levels is a sum of one-hot columns.
- Every test is multiplied by its column's ``__present`` flag; ``&`` is a product, ``|`` is
  a + b - ab, ``!`` is 1 - a.

All sign bits of a filter are computed in one batched circuit, all zero tests in another,
injected to arithmetic shares together (1 round); the present flags then take one
multiplication round, and each level of ``&``/``|`` one more (operands paired up as a
balanced tree).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

import numpy as np

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.manifest import (
    TYPED_KINDS,
    ColumnInfo,
    one_hot_columns,
    present_column,
)
from mpc.protocols import arith, bits, boolean, compare
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Deepest nesting of a filter (the root is level 1).
MAX_DEPTH = 8
#: Most nodes (operators and tests) in one filter.
MAX_NODES = 64
#: Most values of one ``in``.
MAX_IN_VALUES = 64
#: Largest |constant| (encoded) a comparison accepts: inside the comparison's domain.
MAX_CONSTANT = 1 << 62
#: A number written as a decimal string: signed requests carry no floats (trust.canonical).
DECIMAL_TEXT = re.compile(r"^-?[0-9]{1,18}(\.[0-9]{1,18})?$")

COMPARISONS = ("==", "!=", "<", "<=", ">", ">=")
ORDER = ("<", "<=", ">", ">=")
_COLUMN = {"type": "string", "minLength": 1, "description": "a typed column of the dataset"}
_SCALAR = {"oneOf": [{"type": "number"}, {"type": "string", "minLength": 1},
                     {"type": "boolean"}]}

#: JSON Schema (2020-12) of a filter: ``{"$ref": "#/$defs/filter"}`` with these ``$defs``.
FILTER_DEFS: dict[str, Any] = {
    "filter": {
        "description": "A predicate over typed columns; the analysis counts only the rows "
                       "where it holds (and its column is present). A missing value never "
                       "matches a comparison.",
        "oneOf": [{"$ref": "#/$defs/comparison"}, {"$ref": "#/$defs/in"},
                  {"$ref": "#/$defs/is_present"}, {"$ref": "#/$defs/all_or_any"},
                  {"$ref": "#/$defs/not"}],
    },
    "comparison": {
        "type": "object", "required": ["op", "column", "value"],
        "additionalProperties": False,
        "properties": {
            "op": {"enum": list(COMPARISONS)}, "column": _COLUMN,
            "value": {**_SCALAR, "description": "a number (numeric/date, in the column's "
                      "unit; in a signed request a decimal string such as \"80.5\"), an ISO "
                      "date (date), a declared level (categorical: == and != only) or "
                      "true/false (boolean: == and != only)"}},
    },
    "in": {
        "type": "object", "required": ["op", "column", "values"],
        "additionalProperties": False,
        "properties": {
            "op": {"const": "in"}, "column": _COLUMN,
            "values": {"type": "array", "minItems": 1, "maxItems": MAX_IN_VALUES,
                       "items": {"oneOf": [{"type": "number"},
                                           {"type": "string", "minLength": 1}]},
                       "description": "declared levels (categorical) or numbers/ISO dates "
                                      "(numeric/date)"}},
    },
    "is_present": {
        "type": "object", "required": ["op", "column"], "additionalProperties": False,
        "properties": {"op": {"const": "is_present"}, "column": _COLUMN},
    },
    "all_or_any": {
        "type": "object", "required": ["op", "args"], "additionalProperties": False,
        "properties": {"op": {"enum": ["&", "|"]},
                       "args": {"type": "array", "minItems": 2,
                                "items": {"$ref": "#/$defs/filter"}}},
    },
    "not": {
        "type": "object", "required": ["op", "arg"], "additionalProperties": False,
        "properties": {"op": {"const": "!"}, "arg": {"$ref": "#/$defs/filter"}},
    },
}


# -- the typed tree ------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """[x < bound] (``below``) or [x >= bound] on an encoded column; ``wide``: the declared
    range does not keep x - bound inside the signed 64-bit domain."""

    column: str
    matrix: str
    bound: int
    below: bool
    wide: bool


@dataclass(frozen=True)
class Equal:
    """[x in constants] (``negate``: not in), on an encoded numeric/date column."""

    column: str
    matrix: str
    constants: tuple[int, ...]
    negate: bool = False


@dataclass(frozen=True)
class Indicator:
    """The sum of 0/1 matrix columns (one-hot levels, a boolean's value), or 1 minus it."""

    column: str
    matrices: tuple[str, ...]
    negate: bool = False


@dataclass(frozen=True)
class IsPresent:
    column: str
    #: the ``__present`` flag, or None when the column has no missing values
    flag: str | None


@dataclass(frozen=True)
class Combine:
    """``&`` (``any_`` False) or ``|`` of two or more predicates."""

    args: tuple[Predicate, ...]
    any_: bool


@dataclass(frozen=True)
class Not:
    arg: Predicate


Test = Order | Equal | Indicator
Predicate = Test | IsPresent | Combine | Not


@dataclass(frozen=True)
class Filter:
    """A parsed filter: the typed tree, and its canonical JSON (what the release ledger keys
    filtered cells by)."""

    root: Predicate
    canonical: str
    #: matrix columns read (values, one-hot columns, present flags), in first-use order
    columns: tuple[str, ...]
    #: the typed columns it reads
    typed_columns: tuple[str, ...]
    #: ``__present`` flag of each typed column read (None: no missing values)
    flags: Mapping[str, str | None]


# -- parsing -------------------------------------------------------------------------------


class _Parser:
    def __init__(self, manifest: Mapping[str, ColumnInfo] | None) -> None:
        self.manifest = manifest
        self.nodes = 0

    def fail(self, where: str, message: str) -> AnalysisError:
        return AnalysisError(f"{where}: {message}"[:500])

    def node(self, node: Any, where: str, depth: int) -> Predicate | None:
        if not isinstance(node, Mapping):
            raise self.fail(where, "a filter must be a JSON object with 'op'")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.fail(where, f"a filter has at most {MAX_NODES} nodes")
        if depth > MAX_DEPTH:
            raise self.fail(where, f"a filter is nested at most {MAX_DEPTH} levels deep")
        op = node.get("op")
        if op in ("&", "|"):
            self.keys(node, where, {"op", "args"})
            args = node["args"]
            if not isinstance(args, list) or len(args) < 2:
                raise self.fail(f"{where}.args", f"'{op}' needs a list of at least 2 filters")
            parsed = [self.node(a, f"{where}.args[{i}]", depth + 1) for i, a in enumerate(args)]
            return None if self.manifest is None else Combine(
                tuple(p for p in parsed if p is not None), any_=op == "|")
        if op == "!":
            self.keys(node, where, {"op", "arg"})
            arg = self.node(node["arg"], f"{where}.arg", depth + 1)
            return None if arg is None else Not(arg)
        if op == "is_present":
            self.keys(node, where, {"op", "column"})
            info = self.column(node["column"], f"{where}.column")
            if info is None or self.manifest is None:
                return None
            return IsPresent(info.name, present_column(self.manifest, info.name))
        if op == "in":
            self.keys(node, where, {"op", "column", "values"})
            values = node["values"]
            if not isinstance(values, list) or not 1 <= len(values) <= MAX_IN_VALUES:
                raise self.fail(f"{where}.values", f"'in' needs a list of 1 to "
                                f"{MAX_IN_VALUES} values")
            info = self.column(node["column"], f"{where}.column")
            return None if info is None else self.member(info, values, f"{where}.values")
        if op in COMPARISONS:
            self.keys(node, where, {"op", "column", "value"})
            info = self.column(node["column"], f"{where}.column")
            return None if info is None else self.compare(info, op, node["value"],
                                                          f"{where}.value")
        ops = ", ".join(repr(o) for o in (*COMPARISONS, "in", "is_present", "&", "|", "!"))
        raise self.fail(f"{where}.op", f"unknown operator {op!r}; expected one of {ops}")

    def keys(self, node: Mapping[str, Any], where: str, expected: set[str]) -> None:
        missing = sorted(expected - set(node))
        if missing:
            raise self.fail(where, f"'{node['op']}' needs {', '.join(repr(m) for m in missing)}")
        extra = sorted(set(node) - expected)
        if extra:
            raise self.fail(where, f"unknown key(s) {', '.join(repr(e) for e in extra)} for "
                            f"'{node['op']}'; expected {', '.join(sorted(expected))}")

    def column(self, name: Any, where: str) -> ColumnInfo | None:
        if not isinstance(name, str) or not name:
            raise self.fail(where, "must name a typed column (a non-empty string)")
        if self.manifest is None:
            return None
        info = self.manifest.get(name)
        if info is None or info.kind not in TYPED_KINDS:
            typed = sorted(n for n, i in self.manifest.items() if i.kind in TYPED_KINDS)
            raise self.fail(where, f"unknown column '{name}'; expected one of the dataset's "
                            f"typed columns: {', '.join(typed) or '(none)'}")
        if info.kind == "categorical":
            for matrix in one_hot_columns(info):
                entry = self.manifest.get(matrix)
                if entry is None or entry.kind != "one_hot":
                    raise self.fail(where, f"categorical '{name}' lacks its one-hot column "
                                    f"'{matrix}' in the dataset manifest")
        return info

    def level(self, info: ColumnInfo, value: Any, where: str) -> str:
        if not isinstance(value, str) or value not in info.levels:
            raise self.fail(where, f"{value!r} is not a level of '{info.name}'; expected one "
                            f"of {', '.join(repr(v) for v in info.levels) or '(none)'}")
        return f"{info.name}={value}"

    def encoded(self, info: ColumnInfo, value: Any, where: str, exact: bool) -> Decimal:
        """The constant as an encoded number (value * 10^scale, not yet rounded)."""
        if isinstance(value, str) and info.kind == "date":
            number = Decimal(self.date_offset(info, value, where))
        elif isinstance(value, str) and DECIMAL_TEXT.fullmatch(value):
            number = Decimal(value)  # a decimal as signed requests write it ("80.5")
        elif isinstance(value, bool) or not isinstance(value, int | float):
            expected = "a number or an ISO date" if info.kind == "date" else "a number"
            raise self.fail(where, f"'{info.name}' is {info.kind}; expected {expected}, "
                            f"got {json.dumps(value)}")
        else:
            try:
                number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
            except InvalidOperation as exc:  # inf, nan
                raise self.fail(where, f"{value!r} is not a finite number") from exc
            if not number.is_finite():
                raise self.fail(where, f"{value!r} is not a finite number")
        low, high = info.minimum, info.maximum
        if (low is not None and number < Decimal(repr(low))) or (
                high is not None and number > Decimal(repr(high))):
            raise self.fail(where, f"{value} is outside the declared range "
                            f"[{'' if low is None else f'{low:g}'}, "
                            f"{'' if high is None else f'{high:g}'}] of '{info.name}'")
        scaled = number.scaleb(info.scale)
        if abs(scaled) >= MAX_CONSTANT:
            raise self.fail(where, f"{value} is too large for '{info.name}' at scale "
                            f"{info.scale}")
        if exact and scaled != scaled.to_integral_value():
            raise self.fail(where, f"{value} has more decimals than '{info.name}' keeps "
                            f"(scale {info.scale}): no value can equal it")
        return scaled

    def date_offset(self, info: ColumnInfo, value: str, where: str) -> int:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise self.fail(where, f"{value!r} is not an ISO date (YYYY-MM-DD)") from exc
        if info.origin is None or info.unit != "days":
            raise self.fail(where, f"'{info.name}' counts {info.unit or 'units'} from an "
                            "origin the manifest does not give as a date; compare it with "
                            f"a number of {info.unit or 'units'}")
        return (day - dt.date.fromisoformat(info.origin)).days

    def compare(self, info: ColumnInfo, op: str, value: Any, where: str) -> Test:
        if info.kind == "categorical":
            if op not in ("==", "!="):
                raise self.fail(where, f"'{info.name}' is categorical; it has no order "
                                f"('{op}'); use ==, != or in")
            return Indicator(info.name, (self.level(info, value, where),), negate=op == "!=")
        if info.kind == "boolean":
            if op not in ("==", "!=") or not isinstance(value, bool):
                raise self.fail(where, f"'{info.name}' is boolean; expected == or != with "
                                f"true or false, got '{op}' {json.dumps(value)}")
            return Indicator(info.name, (info.name,), negate=value != (op == "=="))
        number = self.encoded(info, value, where, exact=op in ("==", "!="))
        if op in ("==", "!="):
            return Equal(info.name, info.name, (int(number),), negate=op == "!=")
        # x <= c  <=>  x < floor(c) + 1;  x > c  <=>  x >= floor(c) + 1 (x is an integer)
        if op in ("<", ">="):
            bound = int(number.to_integral_value(rounding=ROUND_CEILING))
        else:
            bound = int(number.to_integral_value(rounding=ROUND_FLOOR)) + 1
        low, high = info.encoded_bounds()
        wide = low is None or high is None or low - bound < -(1 << 63) or high - bound >= 1 << 63
        return Order(info.name, info.name, bound, below=op in ("<", "<="), wide=wide)

    def member(self, info: ColumnInfo, values: Sequence[Any], where: str) -> Test:
        if info.kind == "categorical":
            levels = [self.level(info, v, f"{where}[{i}]") for i, v in enumerate(values)]
            return Indicator(info.name, tuple(dict.fromkeys(levels)))
        if info.kind == "boolean":
            raise self.fail(where, f"'{info.name}' is boolean; use == true or == false")
        numbers = [int(self.encoded(info, v, f"{where}[{i}]", exact=True))
                   for i, v in enumerate(values)]
        return Equal(info.name, info.name, tuple(dict.fromkeys(numbers)))


def check_filter_shape(node: Any) -> None:
    """The filter's structure alone (no dataset): :class:`AnalysisError` naming the place."""
    _Parser(None).node(node, "filter", 1)


def parse_filter(node: Any, manifest: Mapping[str, ColumnInfo]) -> Filter:
    """The filter checked against the dataset manifest (see the module doc)."""
    root = _Parser(manifest).node(node, "filter", 1)
    assert root is not None
    columns: dict[str, None] = {}
    flags: dict[str, str | None] = {}
    for test in _leaves(root):
        flag = present_column(manifest, test.column)
        flags[test.column] = flag
        if isinstance(test, IsPresent):
            named = [test.flag] if test.flag else []
        elif isinstance(test, Indicator):
            named = list(test.matrices)
        else:
            named = [test.matrix]
        columns.update(dict.fromkeys([*named, *([flag] if flag else [])]))
    return Filter(root, json.dumps(node, sort_keys=True, separators=(",", ":")),
                  tuple(columns), tuple(sorted(flags)), flags)


def referenced_columns(node: Any) -> list[str]:
    """The typed columns a (shape-checked) filter names, in first-use order; [] for None."""
    if not isinstance(node, Mapping):
        return []
    out: list[str] = [node["column"]] if isinstance(node.get("column"), str) else []
    args = node.get("args")
    children: list[Any] = args if isinstance(args, list) else [node.get("arg")]
    for child in children:
        out += referenced_columns(child)
    return list(dict.fromkeys(out))


def cell_key(cell: str, f: Filter | None) -> str:
    """A release-ledger cell over the rows where ``f`` holds (``cell`` itself without one):
    ``"g=CR where {canonical filter}"``."""
    return cell if f is None else f"{cell} where {f.canonical}"


def _leaves(p: Predicate) -> list[Test | IsPresent]:
    if isinstance(p, Combine):
        return [leaf for a in p.args for leaf in _leaves(a)]
    if isinstance(p, Not):
        return _leaves(p.arg)
    return [p]


# -- evaluation under MPC ------------------------------------------------------------------


async def evaluate(s: Session, f: Filter, share: Callable[[str], AShare], rows: int) -> AShare:
    """Arithmetic 0/1 shares, one per row, of whether ``f`` holds (nothing opened).

    ``share`` gives the share vector of a matrix column (``rows`` values). Rounds: one
    sign-bit circuit (7) for all order tests, one zero-test circuit (7) for all equalities,
    one AND round for the order tests without a declared range, one injection round, one
    multiplication round for the present flags, one per level of ``&``/``|``.
    """
    leaves = _leaves(f.root)
    bits_of = {**await _order_bits(s, [t for t in leaves if isinstance(t, Order)], share,
                                   rows),
               **await _equal_bits(s, [t for t in leaves if isinstance(t, Equal)], share,
                                   rows)}
    values: dict[int, AShare] = {}
    if bits_of:
        keys = list(bits_of)
        injected = await bits.inject(s, _concat_bits([bits_of[k] for k in keys]))
        for i, key in enumerate(keys):
            values[key] = injected[i * rows:(i + 1) * rows]
    for leaf in leaves:
        if isinstance(leaf, Indicator):
            total = share(leaf.matrices[0])
            for name in leaf.matrices[1:]:
                total = total + share(name)
            values[id(leaf)] = (1 - total) if leaf.negate else total
        elif isinstance(leaf, Equal) and leaf.negate:
            values[id(leaf)] = 1 - values[id(leaf)]
    flagged = [(leaf, flag) for leaf in leaves if not isinstance(leaf, IsPresent)
               and (flag := f.flags.get(leaf.column)) is not None]
    if flagged:
        products = await arith.mul(s, concat([values[id(leaf)] for leaf, _ in flagged]),
                                   concat([share(flag) for _, flag in flagged]))
        for i, (leaf, _) in enumerate(flagged):
            values[id(leaf)] = products[i * rows:(i + 1) * rows]
    for leaf in leaves:
        if isinstance(leaf, IsPresent):
            values[id(leaf)] = (share(leaf.flag) if leaf.flag is not None
                                else _ones(s.party, rows))
    return await _combine(s, f.root, values, rows)


async def _order_bits(s: Session, orders: Sequence[Order], share: Callable[[str], AShare],
                      rows: int) -> dict[int, boolean.BShare]:
    """Boolean 0/1 shares of every order test, keyed by id: one sign-bit circuit for all,
    one AND round for the wide ones (see the module doc)."""
    if not orders:
        return {}
    parts: list[AShare] = []
    for t in orders:
        x = share(t.matrix)
        parts += [x - t.bound] + ([x] if t.wide else [])
    signs = await compare.sign_bits(s, concat(parts), 64)
    at = 0
    firsts: list[boolean.BShare] = []
    pairs: list[tuple[boolean.BShare, boolean.BShare]] = []
    for t in orders:
        firsts.append(signs[at * rows:(at + 1) * rows])
        if t.wide:
            pairs.append((firsts[-1], signs[(at + 1) * rows:(at + 2) * rows]))
        at += 2 if t.wide else 1
    both = await boolean.and_many(s, pairs) if pairs else []
    out: dict[int, boolean.BShare] = {}
    w = 0
    for t, below in zip(orders, firsts, strict=True):
        if t.wide:  # below = msb(x - c), sign = msb(x)
            sign = pairs[w][1]
            below = (below ^ sign ^ both[w]) if t.bound >= 0 else both[w]
            w += 1
        out[id(t)] = below if t.below else below ^ 1
    return out


async def _equal_bits(s: Session, equals: Sequence[Equal], share: Callable[[str], AShare],
                      rows: int) -> dict[int, boolean.BShare]:
    """Boolean 0/1 shares of [x in constants] per test, keyed by id: one zero-test circuit."""
    if not equals:
        return {}
    zero = await compare.zero_bits(s, concat([share(t.matrix) - c for t in equals
                                              for c in t.constants]), 64)
    out: dict[int, boolean.BShare] = {}
    at = 0
    for t in equals:
        hits = [zero[(at + j) * rows:(at + j + 1) * rows] for j in range(len(t.constants))]
        at += len(t.constants)
        out[id(t)] = _xor_all(hits)  # the constants are distinct: at most one hit
    return out


def _xor_all(parts: Sequence[boolean.BShare]) -> boolean.BShare:
    out = parts[0]
    for part in parts[1:]:
        out = out ^ part
    return out


def _concat_bits(parts: Sequence[boolean.BShare]) -> boolean.BShare:
    return boolean.BShare(parts[0].party, np.concatenate([p.a for p in parts]),
                          np.concatenate([p.b for p in parts]))


def _ones(party: int, rows: int) -> AShare:
    zero = np.zeros(rows, dtype=np.uint64)
    return AShare(party, zero, zero).add_public(np.ones(rows, dtype=np.uint64))


async def _combine(s: Session, root: Predicate, leaves: Mapping[int, AShare],
                   rows: int) -> AShare:
    """Evaluate ``&``/``|``/``!`` over the leaves' values: every pending product of every
    node in one multiplication round, operands paired as a balanced tree."""
    done: dict[int, AShare] = dict(leaves)
    operands: dict[int, list[AShare]] = {}
    nodes: list[Combine | Not] = []

    def collect(p: Predicate) -> None:
        if isinstance(p, Combine):
            for a in p.args:
                collect(a)
            nodes.append(p)
        elif isinstance(p, Not):
            collect(p.arg)
            nodes.append(p)

    collect(root)
    for _ in range(MAX_NODES * 2 + 2):  # each pass completes a level or halves operands
        if id(root) in done:
            break
        pairs: list[tuple[Combine, AShare, AShare]] = []
        for p in nodes:
            if id(p) in done:
                continue
            if isinstance(p, Not):
                if id(p.arg) in done:
                    done[id(p)] = 1 - done[id(p.arg)]
                continue
            if id(p) not in operands:
                if not all(id(a) in done for a in p.args):
                    continue
                operands[id(p)] = [done[id(a)] for a in p.args]
            ops = operands[id(p)]
            if len(ops) == 1:
                done[id(p)] = ops[0]
                continue
            operands[id(p)] = ops[2 * (len(ops) // 2):]
            pairs += [(p, ops[i], ops[i + 1]) for i in range(0, len(ops) - 1, 2)]
        if not pairs:
            continue
        products = await arith.mul(s, concat([a for _, a, _ in pairs]),
                                   concat([b for _, _, b in pairs]))
        for i, (p, a, b) in enumerate(pairs):
            ab = products[i * rows:(i + 1) * rows]
            operands[id(p)].append(a + b - ab if p.any_ else ab)
    return done[id(root)]
