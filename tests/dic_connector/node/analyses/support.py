"""Helpers for the analyses tests: plaintext tables, shares, loopback runs, an opening spy.

- :class:`Table` builds a plaintext encoded table (manifest entries + one int64 vector per
  matrix column) and deals it to three parties (:meth:`Table.inputs`).
- :func:`release` runs an analysis on three loopback parties, asserts the three releases are
  equal, and checks the release's transcript against an **independent spy**: every call of
  an opening primitive, recorded by monkeypatching the primitives themselves (not through
  the session's reveal hook that the disclosure layer uses). :func:`run` returns only the
  aggregates; :func:`observed` returns the release and what the spy saw.
- :func:`spy_openings` installs the spy for a whole test (for tests of code that raises).
- :func:`assert_transcript_matches` is the acceptance check: the transcript lists, in order,
  exactly the openings the spy saw (their number, elements, kind and recipients).
- :func:`cases` draws plaintext columns over several segments (sites) with rules, favouring
  the edges of the rules (sizes and missing counts at 0, 1, k - 1, k, k + 1, m - 1, m, ...).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import strategies as st

from dic_connector.node.analyses.base import Analysis, Inputs
from dic_connector.node.analyses.disclosure import NODES, Opening, Release, Rules
from dic_connector.node.analyses.manifest import parse_manifest
from mpc.protocols import arith, boolean
from mpc.ring import as_ring, to_signed
from mpc.session import ALL_PARTIES, Session, run_local
from mpc.sharing import AShare, share

Segments = tuple[tuple[str, int], ...]


@dataclass
class Table:
    """A plaintext encoded table: manifest entries and one int64 vector per matrix column."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    values: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    def _add(self, entry: dict[str, Any], values: Sequence[int]) -> None:
        self.entries.append(entry)
        self.values[entry["name"]] = np.asarray(values, dtype=np.int64)

    def numeric(self, name: str, values: Sequence[int | None], scale: int = 0,
                kind: str = "numeric", present: bool | None = None,
                minimum: float | None = None, maximum: float | None = None,
                origin: str | None = None) -> Table:
        """Encoded integers (value * 10^scale); None is missing (encoded 0, flag 0). A date
        column (``kind="date"``) counts days, from ``origin`` when given."""
        entry: dict[str, Any] = {"name": name, "kind": kind, "column": name, "scale": scale,
                                 "unit": "1" if kind == "numeric" else "days"}
        if minimum is not None:
            entry["minimum"] = minimum
        if maximum is not None:
            entry["maximum"] = maximum
        if origin is not None:
            entry["origin"] = origin
        self._add(entry, [0 if v is None else v for v in values])
        self._present(name, values, present)
        return self

    def boolean(self, name: str, values: Sequence[bool | None],
                present: bool | None = None) -> Table:
        """0/1; None is missing (encoded 0, flag 0)."""
        self._add({"name": name, "kind": "boolean", "column": name, "scale": 0},
                  [int(bool(v)) for v in values])
        self._present(name, values, present)
        return self

    def categorical(self, name: str, levels: Sequence[str], values: Sequence[str | None],
                    present: bool | None = None) -> Table:
        self._add({"name": name, "kind": "categorical", "column": name, "scale": 0,
                   "levels": list(levels)},
                  [0 if v is None else list(levels).index(v) for v in values])
        for level in levels:
            self._add({"name": f"{name}={level}", "kind": "one_hot", "column": name,
                       "scale": 0, "level": level}, [int(v == level) for v in values])
        self._present(name, values, present)
        return self

    def _present(self, name: str, values: Sequence[Any], present: bool | None) -> None:
        if present is None:
            present = any(v is None for v in values)
        if present:
            self._add({"name": f"{name}__present", "kind": "present", "column": name,
                       "scale": 0}, [int(v is not None) for v in values])

    def inputs(self, segments: Segments | None = None) -> list[Inputs]:
        """The three parties' Inputs (every column shared)."""
        manifest = parse_manifest(self.entries)
        segments = segments if segments is not None else (("site", self.rows),)
        views: dict[str, tuple[AShare, AShare, AShare]] = {
            name: share(as_ring(v)) for name, v in self.values.items()}
        return [Inputs({name: v[i] for name, v in views.items()}, manifest, segments)
                for i in range(3)]


# -- the spy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One call of an opening primitive, as one party made it."""

    #: ``"values"`` (arithmetic, ``arith.open_``/``open_to``) or ``"bits"`` (``open_bool``).
    kind: str
    elements: int
    #: The parties that receive the opened values.
    to: tuple[int, ...]
    #: What this party got (signed values, or bit 0 of each word); None if not a recipient.
    values: tuple[int, ...] | None
    #: Where the primitive was called from (``"mpc.protocols.sort.open_bool"``, ...).
    where: str


@dataclass
class Opened:
    """What the three parties opened, in program order (one list per party)."""

    calls: list[list[Seen]] = field(default_factory=lambda: [[], [], []])

    @property
    def openings(self) -> list[Seen]:
        """The openings, checked to be the same on the three parties, with the values
        the recipients got (checked equal among them)."""
        assert len(self.calls[0]) == len(self.calls[1]) == len(self.calls[2])
        out = []
        for views in zip(*self.calls, strict=True):
            first = views[0]
            for v in views:
                assert (v.kind, v.elements, v.to, v.where) == (
                    first.kind, first.elements, first.to, first.where)
            got = {views[p].values for p in first.to}
            assert len(got) == 1, f"recipients got different values: {got}"
            out.append(Seen(first.kind, first.elements, first.to, got.pop(), first.where))
        return out

    @property
    def arith(self) -> list[list[int]]:
        """The arithmetic openings' values."""
        return [list(o.values or ()) for o in self.openings if o.kind == "values"]

    @property
    def arith_values(self) -> list[int]:
        return [v for batch in self.arith for v in batch]

    @property
    def bits(self) -> list[list[int]]:
        """The boolean openings' bits, except the comparison bits opened inside the sort."""
        return [list(o.values or ()) for o in self.openings
                if o.kind == "bits" and not o.where.startswith("mpc.protocols.sort.")]

    @property
    def sort_bits(self) -> int:
        """How many comparison bits the sort opened."""
        return sum(o.elements for o in self.openings
                   if o.where.startswith("mpc.protocols.sort."))


class _Spies:
    """The recorders the patched primitives write to (a tuple, replaced, never mutated)."""

    recorders: tuple[Opened, ...] = ()


#: The real primitives, captured before any patching.
REAL: dict[Callable[..., Awaitable[Any]], str] = {
    arith.open_: "open_", arith.open_to: "open_to", boolean.open_bool: "open_bool"}
SPIED_PACKAGES = ("mpc", "dic_connector", "tests")


def _record(s: Session, seen: Seen) -> None:
    for recorder in _Spies.recorders:
        recorder.calls[s.party].append(seen)


def _spy(real: Callable[..., Awaitable[Any]], where: str) -> Callable[..., Awaitable[Any]]:
    primitive = REAL[real]

    async def spied(s: Session, x: Any, *args: Any) -> Any:
        out = await real(s, x, *args)  # a refused opening raises: nothing is recorded
        elements = int(np.asarray(x.a).size)
        if primitive == "open_bool":
            bits = (np.asarray(out, dtype=np.uint64) & np.uint64(1)).ravel()
            _record(s, Seen("bits", elements, ALL_PARTIES,
                            tuple(int(b) for b in bits), where))
        else:
            to = ALL_PARTIES if primitive == "open_" else (int(args[0]),)
            got = None if out is None else tuple(int(v) for v in to_signed(out).ravel())
            _record(s, Seen("values", elements, to, got, where))
        return out

    spied.__spy__ = True  # type: ignore[attr-defined]
    return spied


def _install(mp: pytest.MonkeyPatch) -> None:
    """Replace every reference to a real primitive in the loaded project modules (so an
    opening is seen whichever module calls it, e.g. ``sort``'s own ``open_bool``)."""
    if getattr(arith.open_, "__spy__", False):
        return  # already installed by an enclosing spy
    for name, module in list(sys.modules.items()):
        if module is None or not name.startswith(SPIED_PACKAGES):
            continue
        for attr, value in list(vars(module).items()):
            if any(value is real for real in REAL):
                mp.setattr(module, attr, _spy(value, f"{name}.{attr}"))


def spy_openings(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """Record every opening until the end of the test."""
    seen = Opened()
    _install(monkeypatch)
    monkeypatch.setattr(_Spies, "recorders", (*_Spies.recorders, seen))
    return seen


@contextmanager
def spying() -> Iterator[Opened]:
    """Record every opening inside the block."""
    with pytest.MonkeyPatch.context() as mp:
        yield spy_openings(mp)


def assert_transcript_matches(transcript: Sequence[Opening], seen: Opened) -> None:
    """The transcript is exactly what the spy saw opened: entry by entry, in order, the
    number of openings (an entry may cover several, e.g. a sort's rounds), their elements,
    kind (bits/values) and recipients, and nothing the spy saw is missing."""
    openings = seen.openings
    at = 0
    for entry in transcript:
        group = openings[at:at + entry.reveals]
        assert entry.reveals >= 1 and len(group) == entry.reveals, (entry, openings[at:])
        assert [o.kind for o in group] == [entry.kind] * entry.reveals, (entry, group)
        assert sum(o.elements for o in group) == entry.elements, (entry, group)
        for o in group:
            assert tuple(NODES[p] for p in o.to) == entry.to, (entry, o)
        at += entry.reveals
    assert at == len(openings), f"not in the transcript: {openings[at:]}"


# -- runs ------------------------------------------------------------------------------


def rules_of(rules: Rules | int) -> Rules:
    return rules if isinstance(rules, Rules) else Rules.of(rules)


def observed(analysis: Analysis, table: Table, parameters: dict[str, Any],
             rules: Rules | int, segments: Segments | None = None) -> tuple[Release, Opened]:
    """Run on three loopback parties; assert the three releases are equal and that the
    transcript is what the spy saw; return the release and the spy's record."""
    applied = rules_of(rules)

    async def program(s: Session, inputs: Inputs) -> Release:
        return await analysis.run(s, inputs, parameters, applied)

    inputs = table.inputs(segments)
    with spying() as seen:
        releases: list[Release] = asyncio.run(run_local(program, inputs))
    assert releases[0] == releases[1] == releases[2]
    assert releases[0].rules == applied
    assert_transcript_matches(releases[0].transcript, seen)
    return releases[0], seen


def release(analysis: Analysis, table: Table, parameters: dict[str, Any],
            rules: Rules | int, segments: Segments | None = None) -> Release:
    """:func:`observed` without the spy's record."""
    return observed(analysis, table, parameters, rules, segments)[0]


def run(analysis: Analysis, table: Table, parameters: dict[str, Any], rules: Rules | int,
        segments: Segments | None = None) -> dict[str, Any]:
    """The aggregates of :func:`release` (``rules``: a Rules, or k for ``Rules.of(k)``)."""
    return release(analysis, table, parameters, rules, segments).aggregates


# -- strategies ------------------------------------------------------------------------


@st.composite
def any_rules(draw: st.DrawFn, max_k: int = 7) -> Rules:
    """Rules.of(k), or any min_subset_size (also below k, which Rules itself accepts)."""
    k = draw(st.integers(1, max_k))
    m = draw(st.none() | st.integers(1, max_k + 2))
    return Rules.of(k) if m is None else Rules(k, m)


@dataclass(frozen=True)
class Case:
    """A plaintext column (None = missing) over segments, with the rules to apply."""

    values: list[Any]
    segments: Segments
    rules: Rules
    #: Whether the column has a missing-value indicator (else no value is None).
    indicator: bool


def _edges(rules: Rules, *extra: int) -> st.SearchStrategy[int]:
    k, m = rules.min_cell_count, rules.min_subset_size
    return st.sampled_from(sorted({v for v in (0, 1, k - 1, k, k + 1, m - 1, m, m + 1, *extra)
                                   if v >= 0}))


@st.composite
def cases(draw: st.DrawFn, value: st.SearchStrategy[Any], max_segments: int = 3,
          max_rows: int = 10, indicator: bool | None = None) -> Case:
    """1..max_segments segments of 0..max_rows rows (or an edge size), a number of missing
    values at an edge (0, 1, k - 1, k, ...) or anywhere, placed at random."""
    applied = draw(any_rules())
    count = draw(st.integers(1, max_segments))
    size = st.integers(0, max_rows) | _edges(applied)
    segments = tuple((f"site-{i}", draw(size)) for i in range(count))
    total = sum(rows for _, rows in segments)
    with_indicator = draw(st.booleans()) if indicator is None else indicator
    values = draw(st.lists(value, min_size=total, max_size=total))
    if with_indicator and total:
        missing = min(total, draw(_edges(applied, total // 2, total) | st.integers(0, total)))
        for i in draw(st.permutations(range(total)))[:missing]:
            values[i] = None
    return Case(values, segments, applied, with_indicator)
