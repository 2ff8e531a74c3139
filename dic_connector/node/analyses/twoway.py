"""Two-way tables under MPC: their variables, their cells, and secondary suppression along
their rows and columns (used by :mod:`.contingency` and :mod:`.fisher`).

**Variables.** A table's row or column variable is a categorical or boolean typed column
(its declared levels; ``false``, ``true``), or a binary derived from a filter
(:mod:`.filters`): its first level holds the rows where the filter holds, its second those
where it does not. A variable is **present** on a row when its column is (for a derived
binary: when every typed column its filter reads is); a table counts the rows where both
are present.

**Under MPC** (replicated sharing over Z_2^64, Araki et al. CCS 2016; ABY3): each level is a
0/1 share per row (one-hot columns, 1 - x and x for a boolean, f and 1 - f for a derived
binary evaluated under MPC), and the query set q is the product of the ``__present`` flags
and the filter (one multiplication round per level of a balanced product). The cell
counts are n_ij = sum_rows R_i C_j q: one round for the products R_i q, one per-segment dot
product round for all r x c cells (ABY3 §5.1: one ring element per cell and contributor).

**Disclosure control** (:mod:`.disclosure`), every check under MPC opening only its bits:

1. The query set: each contributing dataset version has >= min_subset_size rows in it and
   their number is >= k (else nothing else is opened).
2. **Primary suppression**: [n_ij >= k] per cell (with the release ledger, also every sum of
   the cell over contributors that earlier releases make derivable). A cell below k, zero
   included, is never opened and shows ``"<k"``. With a ``"filter"``, the same table
   without it gives per cell the rows that fail the filter: each such count must be 0 or
   >= k, else the cell is hidden too (``"suppressed"``), as in :mod:`.frequency`.
3. **Secondary suppression.** The margins are assumed known to the researcher (a
   ``frequency`` of each variable over the same rows opens those >= k), so no line (row or
   column) may let a hidden cell be recovered by subtraction. A line with opened cells
   hides one more cell when it has exactly one hidden cell (a public decision: the
   pattern of hidden cells is shown anyway), or when the sum M of its h hidden cells
   (checked under MPC, one or two bits; :func:`line_check`) leaves them determined or
   bounded: with only cells below k, unless k <= M <= (h - 1)(k - 1) (below k, M is a
   count below k itself, or 0, which pins them; above, each is >= 1); with s cells shown
   'suppressed' (>= k), unless
   M >= s k + 1. A line without opened cells cannot hide more; when its cells fail the
   same check (and its margin is >= k, so known), they count as known in the other lines
   from then on. Over the whole table, as in :mod:`.frequency`, the suppressed mass and
   the rows not in an opened cell (the suppressed mass plus the rows outside the table:
   missing values and rows the filter drops; N is public) must each be 0 or >= k. The
   cell hidden next in a line is, among its opened cells whose crossing lines already
   hide cells (so that no new line with one hidden cell appears where it can be avoided),
   the smallest (a tournament minimum under MPC; which cells equal it is opened to the
   three nodes); lines are handled in order (rows, columns, the table), and rounds repeat
   until every line passes (at most r c hidings). Secondary cells are >= k and show
   ``"suppressed"``. These are checks along lines, not a general linear-programming audit
   of the pattern: the tests check on random tables that no hidden cell below k that the
   margins alone leave open is determined by the margins and the opened cells; a
   researcher who also uses the marks as bounds ('<k' below k, 'suppressed' >= k) can
   still pin a cell of some patterns (e.g. a hidden rectangle whose small cells are at 0
   and k - 1). An audit under MPC is future work.
4. With a ledger, when every cell opens, the rows outside the table per contributor (their
   missing values) must not be derivable below k with earlier releases, else the smallest
   cell is hidden and step 3 runs again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import AnalysisError
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.disclosure import Disclosure, Gate, suppressed
from dic_connector.node.analyses.filters import Filter, evaluate, parse_filter
from dic_connector.node.analyses.frequency import SECONDARY, levels_of
from dic_connector.node.analyses.manifest import (
    TYPED_KINDS,
    ColumnInfo,
    one_hot_columns,
    present_column,
)
from mpc.protocols import arith
from mpc.session import Session
from mpc.sharing import AShare, concat

#: Labels of a derived binary that names none: where its filter holds, where it does not.
DEFAULT_LABELS = ("yes", "no")
#: Kinds of typed column a variable may name.
VARIABLE_KINDS: frozenset[str] = frozenset({"categorical", "boolean"})
#: Most ring elements multiplied in one round of the cell products (bounds memory).
BATCH_ELEMENTS = 1 << 23


@dataclass(frozen=True)
class Variable:
    """One margin of the table: a categorical or boolean typed column, or a binary derived
    from a filter."""

    #: ``"row"`` or ``"col"``.
    axis: str
    #: What cells are named by: the typed column, or ``[<canonical filter>]``.
    name: str
    levels: tuple[str, ...]
    info: ColumnInfo | None
    derived: Filter | None
    #: The ``__present`` flags of the typed columns it reads.
    flags: tuple[str, ...]
    #: Matrix columns read (values and flags).
    columns: tuple[str, ...]
    typed: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            "variable": self.name if self.derived is None else json_filter(self.derived),
            "levels": list(self.levels),
        }

    async def indicators(self, s: Session, inputs: Inputs) -> AShare:
        """0/1 shares of each level per row, shape (levels, rows); only a derived binary
        communicates (its filter)."""
        if self.derived is not None:
            holds = await evaluate(s, self.derived, inputs.share, inputs.row_count)
            return stack(s, [holds, 1 - holds])
        assert self.info is not None
        if self.info.kind == "boolean":
            x = inputs.share(self.info.name)
            return stack(s, [1 - x, x])
        return stack(s, [inputs.share(c) for c in one_hot_columns(self.info)])


def json_filter(f: Filter) -> Any:
    """The filter as the request wrote it (canonical JSON, parsed)."""
    return json.loads(f.canonical)


def stack(s: Session, parts: Sequence[AShare]) -> AShare:
    """Equal-shaped share vectors stacked on a new first axis (local)."""
    return AShare(s.party, np.stack([p.a for p in parts]), np.stack([p.b for p in parts]))


def variable(recipe: str, axis: str, spec: Any, manifest: Mapping[str, ColumnInfo]) -> Variable:
    """The variable a parameter names, checked against the manifest."""
    where = f"{recipe}: parameter '{axis}'"
    if isinstance(spec, Mapping):
        try:
            f = parse_filter(spec["filter"], manifest)
        except AnalysisError as exc:
            raise AnalysisError(f"{where}: {exc}") from None
        labels = tuple(spec.get("labels", DEFAULT_LABELS))
        flags = tuple(dict.fromkeys(v for v in f.flags.values() if v is not None))
        return Variable(
            axis,
            f"[{f.canonical}]",
            labels,
            None,
            f,
            flags,
            tuple(dict.fromkeys([*f.columns, *flags])),
            f.typed_columns,
        )
    info = manifest.get(spec)
    if info is None or info.kind not in TYPED_KINDS:
        typed = sorted(n for n, i in manifest.items() if i.kind in VARIABLE_KINDS)
        raise AnalysisError(
            f"{where}: unknown column '{spec}'; expected a categorical or "
            f"boolean typed column of the dataset: {', '.join(typed) or '(none)'}"
        )
    if info.kind not in VARIABLE_KINDS:
        raise AnalysisError(
            f"{where}: '{spec}' is {info.kind}; expected a categorical or "
            "boolean column, or a binary derived from a filter, e.g. "
            f'{{"filter": {{"op": ">=", "column": "{spec}", "value": ...}}, '
            '"labels": [...]}'
        )
    values = [info.name]
    if info.kind == "categorical":
        values = one_hot_columns(info)
        for name in values:
            entry = manifest.get(name)
            if entry is None or entry.kind != "one_hot":
                raise AnalysisError(
                    f"{where}: categorical '{spec}' lacks its one-hot column "
                    f"'{name}' in the dataset manifest"
                )
    levels = levels_of(info)
    if not levels:
        raise AnalysisError(f"{where}: categorical '{spec}' declares no level")
    flag = present_column(manifest, info.name)
    flags = (flag,) if flag is not None else ()
    return Variable(axis, info.name, levels, info, None, flags, (*values, *flags), (info.name,))


async def product(s: Session, factors: Sequence[AShare]) -> AShare | None:
    """The elementwise product of 0/1 share vectors (None: no factor), as a balanced tree:
    one multiplication round per level."""
    layer = list(factors)
    while len(layer) > 1:
        half = len(layer) // 2
        left = stack(s, layer[:half])
        right = stack(s, layer[half : 2 * half])
        joined = await arith.mul(s, left, right)
        layer = [joined[i] for i in range(half)] + layer[2 * half :]
    return layer[0] if layer else None


async def present_rows(s: Session, inputs: Inputs, row: Variable, col: Variable) -> AShare | None:
    """0/1 shares of the rows where both variables are present (None: every row)."""
    flags = dict.fromkeys([*row.flags, *col.flags])
    return await product(s, [inputs.share(flag) for flag in flags])


async def cell_counts(
    s: Session, inputs: Inputs, row: Variable, col: Variable, rows_in: AShare | None
) -> AShare:
    """Shares of each contributor's count of each cell over the rows ``rows_in``, shape
    (contributors, r c), cell (i, j) at i c + j: one round for R_i q (none without
    ``rows_in``), then one per-segment dot product round (more only for very large tables)."""
    r_ind = await row.indicators(s, inputs)
    c_ind = await col.indicators(s, inputs)
    if rows_in is not None:
        wide = AShare(
            s.party,
            np.broadcast_to(rows_in.a, r_ind.shape),
            np.broadcast_to(rows_in.b, r_ind.shape),
        )
        r_ind = await arith.mul(s, r_ind, wide)
    r, c, n = r_ind.shape[0], c_ind.shape[0], inputs.row_count
    lengths = [count for _, count in inputs.segments]
    per_column: list[AShare] = []
    step = max(1, BATCH_ELEMENTS // max(1, r * n))
    for start in range(0, c, step):
        cols = range(start, min(c, start + step))
        x = AShare(s.party, np.tile(r_ind.a, (len(cols), 1)), np.tile(r_ind.b, (len(cols), 1)))
        y = AShare(
            s.party,
            np.repeat(c_ind.a[start : start + len(cols)], r, axis=0),
            np.repeat(c_ind.b[start : start + len(cols)], r, axis=0),
        )
        per_column.append(await arith.segment_dot(s, x, y, lengths))  # (cols * r, segments)
    joined = concat(per_column, axis=0)  # index j * r + i
    order = np.array([j * r + i for i in range(r) for j in range(c)], dtype=np.int64)
    return AShare(s.party, joined.a[order].T.copy(), joined.b[order].T.copy())


@dataclass(frozen=True)
class LineCheck:
    """A check of one line's hidden cells under MPC: bits [x >= t] for each (x, t) of
    ``values``, combined by ``rule``."""

    values: tuple[tuple[AShare, int], ...]
    #: ``"within"``: b0 and not b1; ``"at_least"``: b0; ``"not_both"``: not (b0 and b1)
    rule: str

    def holds(self, bits: Sequence[bool]) -> bool:
        if self.rule == "within":
            return bits[0] and not bits[1]
        if self.rule == "at_least":
            return bits[0]
        return not (bits[0] and bits[1])


def line_check(
    k: int, hidden: int, large: int, opened: bool, mass: AShare, margin: AShare
) -> LineCheck | None:
    """When a line's ``hidden`` cells (``large`` of them shown 'suppressed', so >= k; the
    others '<k'; the line's other cells opened or known) are left undetermined by their sum
    M (its margin minus the rest): None when they never are (the line must hide more).

    - With only cells below k: k <= M <= B = (h - 1)(k - 1) (below k, M is itself a count
      of 1..k-1 rows, or 0, which pins them all; above B each is >= M - B >= 1, a small
      count that exists). A line without opened cells, whose margin is known only when
      >= k, needs margin < k or M <= B.
    - With s >= 1 cells >= k (and h >= 2): M >= s k + 1 (at s k they are all exactly k and
      the others 0).
    - One hidden cell is M itself (unless it lies in a line without opened cells whose
      margin is < k).
    """
    if large:
        if hidden == 1:
            return None
        return LineCheck(((mass, large * k + 1),), "at_least")
    bound = (hidden - 1) * (k - 1)
    if not opened:
        return LineCheck(((margin, k), (mass, bound + 1)), "not_both")
    if bound < k:
        return None
    return LineCheck(((mass, k), (mass, bound + 1)), "within")


@dataclass(frozen=True)
class Cells:
    """The cells of a table after primary suppression (shares, the same on all parties)."""

    row: Variable
    col: Variable
    #: Each contributor's count of each cell, shape (contributors, r c).
    per: AShare
    #: The pooled counts, shape (r c,).
    counts: AShare
    #: Ledger names of the cells.
    names: list[str]
    #: [count >= k] per cell.
    primary: Gate
    #: What may open so far (primary, ledger and the filter's complements).
    gate: Gate
    #: Cells (index i c + j) hidden because the rows the filter drops from them are 1..k-1.
    dropped: tuple[int, ...] = ()

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.row.levels), len(self.col.levels)


def shown(k: int, cells: Cells, opened: Sequence[int | None]) -> dict[str, Any]:
    """The result: cells as counts, ``"<k"`` or ``"suppressed"``; totals of opened lines."""
    r, c = cells.shape
    shown = [
        [
            opened[i * c + j]
            if opened[i * c + j] is not None
            else (SECONDARY if cells.primary[i * c + j] else suppressed(k))
            for j in range(c)
        ]
        for i in range(r)
    ]

    def total(values: Sequence[int | None]) -> int | None:
        known = [v for v in values if v is not None]
        return sum(known) if len(known) == len(values) else None

    return {
        "rows": cells.row.as_json(),
        "columns": cells.col.as_json(),
        "cells": shown,
        "row_totals": [total(opened[i * c : (i + 1) * c]) for i in range(r)],
        "column_totals": [total(opened[j::c]) for j in range(c)],
        "total": total(opened),
        "min_cell_count": k,
    }


async def hide_smallest(
    d: Disclosure,
    cells: Cells,
    gate: Gate,
    line: Sequence[int],
    kind: str,
    rows: int,
    why: str,
) -> Gate:
    """``gate`` with one more opened cell of ``line`` (``kind``: row, col or table) closed: among those whose crossing
    lines (the column of a row's cell, the row of a column's cell, both for the whole
    table) already hide most cells, so that hiding it makes no new line with one hidden
    cell where it can be avoided (a public choice: the pattern is shown anyway), the
    smallest, under MPC (``rows`` bounds every count)."""
    r, c = cells.shape
    allowed = gate.allowed
    hidden_in_row = [not allowed[i * c : (i + 1) * c].all() for i in range(r)]
    hidden_in_col = [not allowed[j::c].all() for j in range(c)]
    opened = [x for x in line if allowed[x]]

    def score(x: int) -> int:
        return int(kind != "row" and hidden_in_row[x // c]) + int(
            kind != "col" and hidden_in_col[x % c]
        )

    best = max(score(x) for x in opened)
    mask = np.zeros(r * c, dtype=np.bool_)
    mask[[x for x in opened if score(x) == best]] = True
    among = gate.narrowed("the line", mask)
    j = await d.smallest(
        "opened cell counts of the line", cells.counts, among, max(1, rows).bit_length()
    )
    keep = np.ones(r * c, dtype=np.bool_)
    keep[j] = False
    return gate.narrowed(
        f"{why}: cell ({cells.row.levels[j // c]}, {cells.col.levels[j % c]})", keep
    )


async def line_masses(
    d: Disclosure, lines: Sequence[tuple[int, tuple[str, frozenset[int]], LineCheck]]
) -> npt.NDArray[np.bool_]:
    """Per line, whether its :class:`LineCheck` holds: one batched comparison circuit,
    opening one bit per threshold."""
    k = d.rules.min_cell_count
    parts = [m + (k - t) for _, _, check in lines for m, t in check.values]
    labels = "; ".join(key[0] for _, key, _ in lines)
    bits = (await d.at_least(f"hidden mass of {labels} (its range)", concat(parts))).allowed
    out, at = [], 0
    for _, _, check in lines:
        out.append(check.holds([bool(b) for b in bits[at : at + len(check.values)]]))
        at += len(check.values)
    return np.array(out, dtype=np.bool_)


async def table_masses(
    d: Disclosure, labels: Sequence[str], masses: Sequence[AShare]
) -> npt.NDArray[np.bool_]:
    """[mass == 0 or mass >= k] for the whole table, as :mod:`.frequency` checks."""
    return (await d.safe_residuals("; ".join(labels), concat(list(masses)))).allowed


async def secondary_suppression(
    d: Disclosure, cells: Cells, gate: Gate, rows: int, check_excluded: bool
) -> Gate:
    """Hide cells until no row, column or the whole table gives a hidden one away (see
    the module doc). Each round checks the lines in order (rows, columns, the whole
    table; :func:`line_check`) and, in that order, hides one more cell of each line
    that needs it (:func:`hide_smallest`), unless a cell of the line was hidden earlier
    in the round. A line without opened cells cannot hide more: when its check fails,
    its hidden cells count as known in the other lines from then on. Checks already
    passed are not made again."""
    r, c = cells.shape
    k = d.rules.min_cell_count
    everything = list(range(r * c))
    rows_ = [
        ("row", f"row {v!r}", [i * c + j for j in range(c)]) for i, v in enumerate(cells.row.levels)
    ]
    cols_ = [
        ("col", f"column {v!r}", [i * c + j for i in range(r)])
        for j, v in enumerate(cells.col.levels)
    ]
    lines = [*rows_, *cols_, ("table", "the table", everything)]
    safe: set[tuple[str, frozenset[int]]] = set()
    known: set[int] = set()  # hidden cells a line without opened cells may give away
    while True:
        allowed = gate.allowed
        needs: dict[int, str] = {}
        exposed: set[int] = set()  # known from the next round on
        lined: list[tuple[int, tuple[str, frozenset[int]], LineCheck]] = []
        table: list[tuple[int, tuple[str, frozenset[int]], AShare]] = []
        for at, (_, label, line) in enumerate(lines):
            hidden = [x for x in line if not allowed[x] and x not in known]
            opened = [x for x in line if allowed[x]]
            if line is everything:
                if not opened:
                    continue
                every_hidden = [x for x in line if not allowed[x]]
                masses = [("suppressed mass", every_hidden)] if every_hidden else []
                if check_excluded:
                    masses.append(("rows not in an opened cell", opened))
                for what, part in masses:
                    key = (what, frozenset(every_hidden))
                    if key in safe:
                        continue
                    total = cells.counts[np.array(part)].sum()
                    mass = total if what == "suppressed mass" else rows - total
                    table.append((at, key, mass.reshape(1)))
                continue
            if not hidden:
                continue
            key = (label, frozenset(hidden) | frozenset(-1 - x for x in line if x in known))
            if key in safe:
                continue
            large = sum(cells.primary[x] for x in hidden)
            margin = cells.counts[np.array(line)].sum().reshape(1)
            mass = cells.counts[np.array(hidden)].sum().reshape(1)
            check = line_check(k, len(hidden), large, bool(opened), mass, margin)
            if check is not None:
                lined.append((at, key, check))
            elif opened:
                needs[at] = f"the {len(hidden)} hidden cell(s) of {label}"
            else:
                exposed.update(hidden)
        results: list[tuple[list[Any], npt.NDArray[np.bool_]]] = []
        if lined:
            results.append((lined, await line_masses(d, lined)))
        if table:
            names = [key[0] for _, key, _ in table]
            results.append((table, await table_masses(d, names, [m for *_, m in table])))
        for pending, checked in results:
            for (at, key, _), ok in zip(pending, checked, strict=True):
                if ok:
                    safe.add(key)
                elif lines[at][2] is everything or any(allowed[x] for x in lines[at][2]):
                    needs.setdefault(at, f"the hidden mass of {key[0]}")
                else:
                    exposed.update(x for x in lines[at][2] if not allowed[x])
        grew = bool(exposed - known)
        known |= exposed
        if not needs:
            if grew:
                continue
            return gate
        touched: set[int] = set()
        for at in sorted(needs):
            kind, _, line = lines[at]
            if touched & set(line):
                continue  # this line hides one more cell already in this round
            before = gate.allowed
            gate = await hide_smallest(
                d, cells, gate, line, kind, rows, f"secondary suppression ({needs[at]})"
            )
            touched |= {int(x) for x in np.flatnonzero(before & ~gate.allowed)}
