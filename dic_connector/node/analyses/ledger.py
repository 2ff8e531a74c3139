"""Differencing across releases: the sums of contributors a new release would make derivable.

A release opens, for each of its **cells** (a level of a categorical column, ``g=CR``; the
missing values of a column, ``g__missing``), the sum of that cell over its contributing
dataset versions. Each cell on its own is checked (>= k, or 0 / >= k for complements), but a
researcher combines releases: a table over {tm, tr} minus the same table over {tm} gives
tr's cells, which no check saw. So each node keeps a **ledger** of the cells every release
opened, per contributor, as shares (:mod:`dic_connector.node.store.ledger`), and before a
new release opens cell c over the contributor set N, every set T of contributors whose sum
of c follows from the released sets S_1..S_r of c and N, and did not follow from S_1..S_r
alone, must hold 0 or >= k rows in c; otherwise c is suppressed (a table) or the release is
refused (a count whose complement it is).

"Follows from" is linear algebra over the rationals: a researcher can form any rational
combination of opened sums, so T's sum is derivable iff its indicator vector lies in the
span of the released sets' indicators (Chin & Ozsoyoglu, "Auditing and inference control in
statistical databases", IEEE TSE 1982: the audit-expert test). The span is computed exactly
(fractions, reduced row echelon form) over the contributors involved, and every subset of
them is tested, so the universe is kept small: above :data:`MAX_UNIVERSE` contributors the
check falls back to every single contributor's cell, which implies every sum (sums of
counts that are each 0 or >= k are 0 or >= k).

Contributors are dataset *versions* (``"<dataset id>/<version id>"``): two versions of one
dataset overlap in rows, which this model does not see; :mod:`.lineage` refuses releases
that would difference them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

from mpc.sharing import AShare

#: Largest number of contributors whose subsets are enumerated exactly (2^12 subsets).
MAX_UNIVERSE = 12
#: Suffix of a column's missing-values cell (``g__missing``).
MISSING_SUFFIX = "__missing"


def missing_cell(column: str) -> str:
    """The ledger cell of ``column``'s missing values."""
    return column + MISSING_SUFFIX


@dataclass(frozen=True)
class Released:
    """One earlier release: the cells it computed (and which it opened), its contributors
    in row order, this node's shares of every contributor's count per cell, and the typed
    columns it read (a release that opened no cell is on the ledger for those alone)."""

    request_id: str
    cells: tuple[str, ...]
    opened: tuple[bool, ...]
    contributors: tuple[str, ...]
    #: shape (len(contributors), len(cells))
    counts: AShare
    #: the typed columns the release read (for the version lineage rule, :mod:`.lineage`)
    columns: tuple[str, ...] = ()
    #: the site of each contributor (for messages; empty when unknown)
    sites: tuple[str, ...] = ()


@dataclass(frozen=True)
class DerivedSum:
    """A set of contributors whose sum of ``cell`` a new release would make derivable."""

    cell: str
    contributors: frozenset[str]
    #: this node's shares of that sum, shape (1,)
    value: AShare


Vector = tuple[Fraction, ...]


def _reduce(basis: list[tuple[int, Vector]], v: Vector) -> Vector:
    """``v`` minus its projection on an echelon basis [(pivot, row)]."""
    out = list(v)
    for pivot, row in basis:
        factor = out[pivot]
        if factor:
            out = [a - factor * b for a, b in zip(out, row, strict=True)]
    return tuple(out)


def _extend(basis: list[tuple[int, Vector]], v: Vector) -> bool:
    """Add ``v`` to a reduced row echelon basis if it is independent of it (True then).

    Every row holds 1 at its pivot and 0 at the other rows' pivots, so :func:`_reduce`
    needs one pass."""
    r = _reduce(basis, v)
    pivot = next((i for i, a in enumerate(r) if a), None)
    if pivot is None:
        return False
    row = tuple(a / r[pivot] for a in r)
    basis[:] = [(p, tuple(a - b[pivot] * c for a, c in zip(b, row, strict=True)))
                for p, b in basis]
    basis.append((pivot, row))
    return True


def _indicator(universe: Sequence[str], members: Iterable[str]) -> Vector:
    chosen = set(members)
    return tuple(Fraction(int(s in chosen)) for s in universe)


def newly_derivable(released: Sequence[frozenset[str]], new: frozenset[str]
                    ) -> list[frozenset[str]]:
    """The nonempty sets of contributors, other than ``new`` itself, whose sum follows from
    the ``released`` sets and ``new`` but not from the released sets alone (exact while the
    universe has at most :data:`MAX_UNIVERSE` contributors; every contributor on its own
    beyond)."""
    universe = sorted(set(new).union(*released))
    if len(universe) > MAX_UNIVERSE:
        return [frozenset({s}) for s in universe]
    old: list[tuple[int, Vector]] = []
    for members in released:
        _extend(old, _indicator(universe, members))
    full = list(old)
    if not _extend(full, _indicator(universe, new)):
        return []  # the new sum already followed from the released ones
    out = []
    for mask in range(1, 1 << len(universe)):
        members = frozenset(s for i, s in enumerate(universe) if mask >> i & 1)
        if members == new:
            continue
        v = _indicator(universe, members)
        if not any(_reduce(full, v)) and any(_reduce(old, v)):
            out.append(members)
    return out


def _component(released: Sequence[frozenset[str]], new: frozenset[str]
               ) -> list[frozenset[str]]:
    """The released sets linked to ``new`` through shared contributors. Sets outside it
    cannot make a new sum derivable that is not the sum of a new one inside and an old one
    outside (both checked, so their sum is 0 or >= k too), so they are left out."""
    linked, universe, rest = [], set(new), list(released)
    grew = True
    while grew:
        grew = False
        for members in list(rest):
            if members & universe:
                linked.append(members)
                universe |= members
                rest.remove(members)
                grew = True
    return linked


@dataclass(frozen=True)
class Ledger:
    """The releases on this node's ledger, as the analyses see them."""

    releases: tuple[Released, ...] = ()

    def derived_sums(self, cell: str, contributors: Sequence[str], current: AShare
                     ) -> list[DerivedSum]:
        """The sums of ``cell`` that releasing it over ``contributors`` (with this node's
        shares ``current`` of each contributor's count, shape (len(contributors),)) would
        newly make derivable, with shares of each from the ledger and ``current``."""
        released: list[frozenset[str]] = []
        known: dict[str, AShare] = {}
        for entry in self.releases:
            if cell not in entry.cells:
                continue
            j = entry.cells.index(cell)
            for i, contributor in enumerate(entry.contributors):
                known.setdefault(contributor, entry.counts[i, j].reshape(1))
            if entry.opened[j]:
                released.append(frozenset(entry.contributors))
        released = _component(released, frozenset(contributors))
        for i, contributor in enumerate(contributors):
            known[contributor] = current[i].reshape(1)
        out = []
        for members in newly_derivable(released, frozenset(contributors)):
            parts = [known[s] for s in sorted(members)]
            total = parts[0]
            for part in parts[1:]:
                total = total + part
            out.append(DerivedSum(cell, members, total))
        return out
