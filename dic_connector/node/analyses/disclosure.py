"""Disclosure control under MPC: every opening of an analysis goes through here, on the record.

An analysis runs in one :class:`Disclosure`, which watches the session's reveals
(:meth:`mpc.session.Session.watch_reveals`): an opening that is not made through one of its
methods is refused *before* any share leaves a node, and every opening that is made is
written into a **transcript** (what was opened, its size, to whom, which rule allowed it).
The transcript is part of the :class:`Release` and of the result's audit entry, so what a
node says an analysis opened is what it opened.

What may be opened is decided by **gates**. A :class:`Gate` is the public outcome of a check
made here under MPC; analyses cannot build one (its constructor takes a private key), so
:meth:`Disclosure.open` opens exactly what some check allowed. Gates can be narrowed
(:meth:`Gate.narrowed`, secondary suppression), never widened.

The checks, all on shared counts, opening only their outcome bits to the three nodes:

- :meth:`Disclosure.at_least`: [count >= k] per count. The sign bit of count - k as a 64-bit
  signed integer, by the bit-sliced MSB circuit of :func:`mpc.protocols.compare.sign_bits`
  (ABY3 §5.3 "local split" + a carry tree, 7 rounds), opened with
  :func:`mpc.protocols.boolean.open_bool` (1 round). Counts lie in [0, rows] and k < 2^62,
  so count - k is far inside the 64-bit domain.
- :meth:`Disclosure.query_set`: the rows an analysis counts, per contributing dataset
  version: each contributor must have at least ``min_subset_size`` rows in it (else the whole
  release is refused, naming the site: a 1-row dataset pooled with a 24-row one would
  otherwise give that row away by differencing), the pooled size n must be >= k, and its
  **complement** N - n (N, the number of rows, is public: ``/v1/datasets`` shows it) must be
  0 or >= k (else ``count()`` minus ``count(column)`` opens a number of missing values below
  k). One batched circuit for all of them: the sign bits of n_s - m, n - k, r - 1 and r - k
  (r = N - n), then one AND for [1 <= r <= k - 1] (x lies in [low, high] iff
  msb(x - low) = 0 and msb(x - high - 1) = 1).
- :meth:`Disclosure.safe_residuals`: [r == 0 or r >= k] per residual r, the same circuit; a
  frequency table checks with it the mass it does not open (suppressed cells, and missing
  values), so that a researcher who knows the total cannot subtract the opened cells to
  recover a suppressed one.
- :meth:`Disclosure.smallest`: which of the allowed counts are the smallest (a tournament
  minimum, :func:`mpc.protocols.compare.min_`, and equality bits): the cell that secondary
  suppression hides next, so that it loses as little as possible.
- :meth:`Disclosure.all_within`: one bit, whether *every* element of a shared column lies
  in a public range [low, high]. It protects computations whose correctness depends on a
  value range that the manifest does not declare (the 64-bit sum of a mean, the key width of
  a sort). Exact for every 64-bit x: with y = x - low (mod 2^64) and w = high - low + 1
  (1 <= w <= 2^63), x is in range iff y < w as unsigned integers, iff msb(y) = 0 and
  msb(y - w) = 1. Both MSBs come from one batched circuit, one AND gives the in-range bits
  (Araki et al. CCS 2016, §2.2 over GF(2)), their complements are summed arithmetically
  (:func:`mpc.protocols.bits.b2a_sum`, 2 rounds) and a zero test on the count
  (:func:`mpc.protocols.compare.zero_bits`) is the only thing opened: the number of
  out-of-range values stays secret.

:meth:`Disclosure.open` then opens, with :func:`mpc.protocols.arith.open_` (1 round, all three
nodes), only the values whose gate bit is set; a suppressed value is never part of any
message that could reconstruct it. :meth:`Disclosure.protocol` labels the openings a protocol
makes inside itself (the comparison bits of a shuffled sort), which depend on no value.

Suppressed cells are shown to the researcher as ``"<k"`` with k substituted (``"<5"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.ledger import DerivedSum, Ledger
from dic_connector.node.analyses.ptable import CellKeyParams
from mpc.errors import ProtocolError
from mpc.protocols import arith, bits, boolean, compare
from mpc.protocols.sort import index_bits
from mpc.ring import to_signed
from mpc.session import Reveal, Session
from mpc.sharing import AShare, concat

#: Largest min_cell_count accepted (keeps count - k inside the comparison domain).
MAX_MIN_CELL_COUNT = 1 << 62
#: The nodes, as the recipients of an opening to all three.
NODES = ("node-0", "node-1", "node-2")

BoolArray = npt.NDArray[np.bool_]
_GATE_KEY = object()


def check_min_cell_count(k: int) -> int:
    """k itself, or :class:`ConfigError` when it is not an integer in [1, 2^62)."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k < MAX_MIN_CELL_COUNT:
        raise ConfigError(f"min_cell_count must be an integer >= 1, got {k!r}")
    return int(k)


def suppressed(k: int) -> str:
    """How a suppressed count is shown: ``"<k"`` with k substituted, e.g. ``"<5"``."""
    return f"<{k}"


def public_share(party: int, values: npt.ArrayLike) -> AShare:
    """A sharing of public integers (party 0 and 2 hold them in x_0), no communication."""
    arr = np.asarray(values, dtype=np.int64)
    zero = np.zeros(arr.shape, dtype=np.uint64)
    return AShare(party, zero, zero).add_public(arr.view(np.uint64))


def overflow_bound(rows: int) -> int:
    """B = 2^(63 - b), b = bits of rows - 1: the sum of ``rows`` values in [-B, B - 1]
    lies in [-2^63, 2^63), so it never wraps the ring."""
    return 1 << (63 - index_bits(max(rows, 1)))


@dataclass(frozen=True)
class Rules:
    """The disclosure rules one release is held to (agreed by the three nodes in the plan)."""

    #: Smallest count any opened cell may have (k).
    min_cell_count: int
    #: Smallest number of query-set rows each contributing dataset version must have.
    min_subset_size: int
    #: Cell-key perturbation of opened counts (:mod:`.perturbation`); None: exact counts.
    perturbation: CellKeyParams | None = None
    #: Most levels (cells, groups, bins) a table or grouping may have (None: no limit);
    #: a request over more is refused (:meth:`~.base.Analysis.table_size`).
    max_levels: int | None = None
    #: Whether releases are checked against the release ledger (pooled/per-site
    #: differencing, version lineage). Releases are recorded on it either way.
    ledger: bool = True

    def __post_init__(self) -> None:
        # stored as int: a numpy integer would make the release and its JSON fail
        object.__setattr__(self, "min_cell_count", check_min_cell_count(self.min_cell_count))
        object.__setattr__(self, "min_subset_size", check_min_cell_count(self.min_subset_size))
        if self.max_levels is not None:
            object.__setattr__(self, "max_levels", check_max_levels(self.max_levels))

    @classmethod
    def of(cls, min_cell_count: int, min_subset_size: int | None = None,
           perturbation: CellKeyParams | None = None, max_levels: int | None = None,
           ledger: bool = True) -> Rules:
        """The rules for k; each contributor needs k rows unless ``min_subset_size`` says
        more (never less: pooling below k per site is what differencing exploits)."""
        return cls(min_cell_count, max(min_cell_count, min_subset_size or min_cell_count),
                   perturbation, max_levels, ledger)

    def tightened(self, other: Rules) -> Rules:
        """The strictest of two sets of rules: the larger k and m, the smaller max_levels,
        the ledger if either checks it, the strictest perturbation (:func:`strictest`)."""
        levels = [x for x in (self.max_levels, other.max_levels) if x is not None]
        return Rules.of(max(self.min_cell_count, other.min_cell_count),
                        max(self.min_subset_size, other.min_subset_size),
                        strictest([p for p in (self.perturbation, other.perturbation)
                                   if p is not None]),
                        min(levels) if levels else None, self.ledger or other.ledger)

    def as_json(self) -> dict[str, Any]:
        """The rules as a result states them (a recipe that perturbed what it opened says
        so in its own ``"perturbed"``: not every recipe perturbs)."""
        out: dict[str, Any] = {"min_cell_count": self.min_cell_count,
                               "min_subset_size": self.min_subset_size,
                               "complements": True, "secondary_suppression": True}
        if self.max_levels is not None:
            out["max_levels"] = self.max_levels
        return out


def check_max_levels(levels: int) -> int:
    """``levels`` itself, or :class:`ConfigError` when it is not an integer in [2, 10^6]."""
    if isinstance(levels, bool) or not isinstance(levels, int | np.integer) \
            or not 2 <= levels <= 1_000_000:
        raise ConfigError(f"max_levels must be an integer in [2, 1000000], got {levels!r}")
    return int(levels)


def strictest(candidates: Sequence[CellKeyParams]) -> CellKeyParams | None:
    """The strictest of several perturbations asked for: the largest variance V (then D,
    then js), exact statistics only if every one allows them (None: none asked)."""
    if not candidates:
        return None
    top = max(candidates, key=lambda p: (p.variance, p.max_noise, p.js))
    return CellKeyParams(top.max_noise, top.variance, top.js,
                         all(p.allow_exact for p in candidates))


@dataclass
class Opening:
    """One entry of a transcript: what was opened, how much, to whom, and why."""

    #: What the opened elements are (``"n >= k"``, ``"level counts"``, ...).
    name: str
    #: ``"bits"`` (boolean sharing) or ``"values"`` (arithmetic sharing).
    kind: str
    #: The gate or rule that allowed the opening.
    rule: str
    #: The receiving nodes.
    to: tuple[str, ...] = NODES
    #: Elements opened, and in how many messages (a protocol may open in several rounds).
    elements: int = 0
    reveals: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "elements": self.elements,
                "reveals": self.reveals, "to": list(self.to), "rule": self.rule}


class Gate:
    """The public outcome of a check made by :class:`Disclosure`: which elements may open.

    Only :class:`Disclosure` makes gates; :meth:`narrowed` makes a stricter one.
    """

    __slots__ = ("_bits", "name")

    def __init__(self, key: object, name: str, allowed: BoolArray) -> None:
        if key is not _GATE_KEY:
            raise TypeError("a Gate is the outcome of a Disclosure check; it cannot be built")
        self.name = name
        self._bits = np.array(allowed, dtype=np.bool_)
        self._bits.setflags(write=False)

    @property
    def allowed(self) -> BoolArray:
        """The gate's bits (read-only: a view, whose write flag cannot be turned back on)."""
        return self._bits.view()

    def __len__(self) -> int:
        return int(self._bits.size)

    def __getitem__(self, index: int) -> bool:
        return bool(self._bits[index])

    def all(self) -> bool:
        return bool(self._bits.all())

    def narrowed(self, reason: str, keep: npt.ArrayLike) -> Gate:
        """This gate with the elements where ``keep`` is False closed too."""
        keep = np.asarray(keep, dtype=np.bool_)
        if keep.shape != self._bits.shape:  # broadcasting would widen a 1-bit gate
            raise ProtocolError(f"gate '{self.name}' has {len(self)} bits; cannot narrow it "
                                f"with {keep.size}")
        return Gate(_GATE_KEY, f"{self.name}, then {reason}", self._bits & keep)


@dataclass(frozen=True)
class Complement:
    """A count that a release of a query set discloses by subtraction from another count a
    researcher can have released (e.g. the present rows that a filter drops: the unfiltered
    count minus the filtered one). :meth:`Disclosure.query_set` requires it 0 or >= k."""

    #: What is counted, for the refusal ("rows where 'x' is present fail the filter").
    what: str
    #: This node's shares of each contributor's count, shape (contributors,).
    per_contributor: AShare
    #: The release-ledger cell it is recorded as (None: not recorded).
    cell: str | None = None


@dataclass(frozen=True)
class QuerySet:
    """Whether a query set may be released: per contributor, pooled, and its complement."""

    #: Why the whole release is refused (None: it is not).
    refusal: str | None
    #: Opens the pooled size n (one element) when every check passed.
    gate: Gate | None
    #: Arithmetic 0/1 shares, one per row, of membership in the query set (the rows an
    #: analysis computes over); None when it holds every row (no filter, no missing values).
    rows: AShare | None = None

    def gate_required(self) -> Gate:
        """The gate of a query set that passed (an analysis computes only then)."""
        if self.gate is None:
            raise ProtocolError(f"the query set was refused: {self.refusal}")
        return self.gate


@dataclass(frozen=True)
class Recorded:
    """The cells a release puts on the ledger: names, whether each was opened, and this
    node's shares of every contributor's count, shape (contributors, cells)."""

    cells: tuple[str, ...]
    opened: tuple[bool, ...]
    counts: AShare


@dataclass(frozen=True)
class Release:
    """What an analysis returns: the aggregates, the transcript of its openings, the rules,
    and what goes on the release ledger (None: nothing)."""

    aggregates: dict[str, Any]
    transcript: tuple[Opening, ...]
    rules: Rules
    recorded: Recorded | None = None
    #: the whole release was refused (its aggregates are the reason only)
    refused: bool = False
    #: checked against the release ledger (pooled/per-site differencing, version lineage)
    across_releases: bool = False

    def as_result(self) -> dict[str, Any]:
        """The stored result: the aggregates, with the rules that were applied."""
        rules = self.rules.as_json()
        if self.across_releases:
            rules |= {"release_ledger": True, "version_lineage": True}
        elif not self.rules.ledger:  # the setting turned the check off (recorded anyway)
            rules |= {"release_ledger": False, "version_lineage": False}
        return {**self.aggregates, "disclosure": rules}


@dataclass
class _Label:
    opening: Opening
    seen: list[Reveal] = field(default_factory=list)


class Disclosure:
    """The one way an analysis opens anything (``with Disclosure(session, rules) as d``).

    ``ledger`` holds the earlier releases (None: no check across releases) and
    ``contributors`` the ids of the contributing dataset versions in row order, with their
    ``sites`` (for messages)."""

    def __init__(self, session: Session, rules: Rules, ledger: Ledger | None = None,
                 contributors: Sequence[str] = (), sites: Sequence[str] = ()) -> None:
        self.session = session
        self.rules = rules
        self.ledger = ledger
        self.contributors = tuple(contributors)
        self._sites = dict(zip(self.contributors, sites, strict=False))
        if ledger is not None:
            for entry in ledger.releases:
                named = dict(zip(entry.contributors, entry.sites, strict=False))
                self._sites.update({c: named.get(c, c.split("/", 1)[0])
                                    for c in entry.contributors if c not in self._sites})
        self._transcript: list[Opening] = []
        self._label: _Label | None = None
        self._recorded: dict[str, tuple[bool, AShare]] = {}
        self._unwatch = session.watch_reveals(self._observe)

    def __enter__(self) -> Disclosure:
        return self

    def __exit__(self, *_: object) -> None:
        self._unwatch()

    @property
    def transcript(self) -> tuple[Opening, ...]:
        return tuple(self._transcript)

    def release(self, aggregates: dict[str, Any]) -> Release:
        recorded = None
        if self._recorded:
            cells = tuple(self._recorded)
            columns = [self._recorded[c][1].reshape(len(self.contributors), 1) for c in cells]
            counts = concat(columns, axis=1)
            recorded = Recorded(cells, tuple(self._recorded[c][0] for c in cells), counts)
        return Release(aggregates, self.transcript, self.rules, recorded,
                       across_releases=self.ledger is not None)

    def refused(self, reason: str) -> Release:
        """A release that opens no aggregate: the researcher sees the reason."""
        return dataclasses.replace(self.release({"suppressed": True, "reason": reason}),
                                   refused=True)

    # -- the record --------------------------------------------------------------------

    def _observe(self, reveal: Reveal) -> None:
        if self._label is None:
            raise ProtocolError(f"an opening of {reveal.elements} {reveal.sharing} element(s) "
                                "outside the disclosure layer was refused")
        opening = self._label.opening
        if reveal.sharing != ("boolean" if opening.kind == "bits" else "arithmetic"):
            raise ProtocolError(f"'{opening.name}' opens {opening.kind}; an opening of "
                                f"{reveal.elements} {reveal.sharing} element(s) was refused")
        opening.elements += reveal.elements
        opening.reveals += 1
        opening.to = tuple(NODES[i] for i in reveal.to)

    @contextmanager
    def _opening(self, name: str, kind: str, rule: str) -> Iterator[Opening]:
        if self._label is not None:
            raise ProtocolError(f"opening '{name}' inside '{self._label.opening.name}'")
        opening = Opening(name, kind, rule)
        self._label = _Label(opening)
        try:
            yield opening
        finally:
            self._label = None
            if opening.reveals:
                self._transcript.append(opening)

    @contextmanager
    def protocol(self, name: str, rule: str) -> Iterator[None]:
        """Label the openings a protocol makes inside itself (e.g. a sort's comparison bits
        of shuffled rows); ``rule`` says why they are safe to open."""
        with self._opening(name, "bits", rule):
            yield

    async def _open_bits(self, name: str, rule: str, x: boolean.BShare) -> BoolArray:
        with self._opening(name, "bits", rule):
            opened = await boolean.open_bool(self.session, x)
        return np.asarray((opened & np.uint64(1)) == 1, dtype=np.bool_)

    # -- gates -------------------------------------------------------------------------

    async def at_least(self, name: str, counts: AShare, k: int | None = None) -> Gate:
        """Open, for each shared count (one-dimensional), the bit [count >= k] (8 rounds);
        k defaults to the rules' min_cell_count."""
        k = check_min_cell_count(self.rules.min_cell_count if k is None else k)
        if counts.shape[0] == 0:
            return Gate(_GATE_KEY, f"{name} >= {k}", np.zeros(0, dtype=np.bool_))
        below = await compare.sign_bits(self.session, counts - k, 64)
        opened = await self._open_bits(f"{name} >= {k}", "min_cell_count", below)
        return Gate(_GATE_KEY, f"{name} >= {k}", ~opened)

    async def query_set(self, sizes: AShare | Sequence[int], sites: Sequence[str], rows: int,
                        complement: bool = True, missing_cell: str | None = None,
                        segment_rows: Sequence[int] | None = None,
                        complements: Sequence[Complement] = ()) -> QuerySet:
        """Check a query set of per-contributor sizes ``sizes`` (shares, or public ints when
        they are known anyway) over ``rows`` rows in all: every contributor >=
        min_subset_size, the pooled n >= k and, with ``complement``, N - n = 0 or >= k (see
        the module doc). With a ledger, ``missing_cell`` (``<column>__missing``) and the
        contributors' ``segment_rows``, also every number of missing values that this
        release and the ledger together would expose (:mod:`.ledger`); the release is then
        recorded as opening that cell. Each of ``complements`` (counts that the release
        discloses by subtraction from another releasable one, e.g. the rows a filter drops)
        must be 0 or >= k pooled, and with the ledger for every sum over contributors it
        exposes (recorded as opened when it has a cell). One circuit; opens one bit per
        contributor, one for n, and one per complement checked."""
        k, m = self.rules.min_cell_count, self.rules.min_subset_size
        if not isinstance(sizes, AShare):
            if complements:
                raise ProtocolError("query_set(): complements need shared sizes")
            public = [int(v) for v in sizes]
            small = [site for site, size in zip(sites, public, strict=True) if size < m]
            pooled = sum(public)
            return self._decide(small, pooled < k, complement and 0 < rows - pooled < k)
        c = len(sites)
        if sizes.shape != (c,):  # else the bits would be read at the wrong places
            raise ProtocolError(f"query_set(): {sizes.shape} sizes for {c} sites")
        for extra in complements:
            if extra.per_contributor.shape != (c,):
                raise ProtocolError(f"query_set(): complement '{extra.what}' has shape "
                                    f"{extra.per_contributor.shape} for {c} sites")
        n = sizes.sum().reshape(1)
        residuals = ([rows - n] if complement else []) + [
            extra.per_contributor.sum().reshape(1) for extra in complements]
        own = len(residuals)
        derived: list[tuple[str, DerivedSum]] = []
        missing: AShare | None = None
        if complement and missing_cell is not None and segment_rows is not None:
            missing = (-sizes).add_public(np.asarray(segment_rows, dtype=np.int64))
            derived += [("missing values", d) for d in self._derived(missing_cell, missing)]
        for extra in complements:
            if extra.cell is not None:
                derived += [(extra.what, d)
                            for d in self._derived(extra.cell, extra.per_contributor)]
        residuals += [d.value for _, d in derived]
        r = concat(residuals) if residuals else None
        parts = [sizes - m, n - k] + ([r - 1, r - k] if r is not None else [])
        signs = await compare.sign_bits(self.session, concat(parts), 64)
        checks = [signs[:c + 1]]
        name = f"each contributor's query set >= {m}; n >= {k}"
        if r is not None:
            # [1 <= r <= k - 1] = [r - 1 >= 0] & [r - k < 0]; its parts are not opened
            q = r.shape[0]
            checks.append(await boolean.and_(self.session, signs[c + 1:c + 1 + q] ^ 1,
                                             signs[c + 1 + q:c + 1 + 2 * q]))
            if complement:
                name += f"; rows outside it 0 or >= {k}"
            for extra in complements:
                name += f"; {extra.what} 0 or >= {k}"
            if derived:
                name += f"; {len(derived)} sum(s) of complements derivable with the ledger"
        opened = await self._open_bits(
            name, "min_subset_size, min_cell_count"
            + (", complements" if complement or complements else "")
            + (", release ledger" if derived else ""), concat_bits(checks))
        small = [site for site, below in zip(sites, opened[:c], strict=True) if below]
        leaks = opened[c + 1:]
        query = self._decide(small, bool(opened[c]), complement and bool(leaks[0]))
        if query.refusal is None:
            for extra, leak in zip(complements, leaks[int(complement):own], strict=True):
                if leak:
                    return QuerySet(f"between 1 and {k - 1} {extra.what}; releasing the "
                                    "query set would disclose their number (complement "
                                    "rule)", None)
        exposed = [(what, d) for (what, d), leak in zip(derived, leaks[own:], strict=True)
                   if leak]
        if query.refusal is None and exposed:
            return QuerySet(self._exposure([d for _, d in exposed], exposed[0][0]), None)
        if query.refusal is None:
            if missing is not None and missing_cell is not None:
                self.record([missing_cell], missing.reshape(c, 1), [True])
            for extra in complements:
                if extra.cell is not None:
                    self.record([extra.cell], extra.per_contributor.reshape(c, 1), [True])
        return query

    def _derived(self, cell: str, current: AShare) -> list[DerivedSum]:
        if self.ledger is None:
            return []
        return self.ledger.derived_sums(cell, self.contributors, current)

    def _exposure(self, exposed: Sequence[DerivedSum], what: str) -> str:
        k = self.rules.min_cell_count
        sites = sorted({self._sites.get(c, c) for d in exposed for c in d.contributors})
        return (f"together with earlier releases it would disclose between 1 and {k - 1} "
                f"{what} of {', '.join(repr(s) for s in sites)} (release ledger)")

    def record(self, cells: Sequence[str], counts: AShare, opened: Sequence[bool]) -> None:
        """Put this release's cells on the ledger (with each contributor's count, shape
        (contributors, cells)) once it completes; cells already recorded are replaced. A
        disclosure without contributors (no ledger context) records nothing."""
        if not self.contributors:
            return
        if counts.shape != (len(self.contributors), len(cells)):
            raise ProtocolError(f"record(): counts of shape {counts.shape} for "
                                f"{len(self.contributors)} contributors and {len(cells)} cells")
        for j, (cell, was_opened) in enumerate(zip(cells, opened, strict=True)):
            self._recorded[cell] = (bool(was_opened), counts[:, j])

    def _decide(self, small: list[str], pooled_below: bool, complement_leaks: bool) -> QuerySet:
        k, m = self.rules.min_cell_count, self.rules.min_subset_size
        if small:
            sites = ", ".join(f"'{s}'" for s in dict.fromkeys(small))
            return QuerySet(f"site(s) {sites} contribute fewer than {m} rows "
                            "(min_subset_size) to the query set", None)
        if pooled_below:
            return QuerySet(f"the query set has fewer than {k} rows (min_cell_count)", None)
        if complement_leaks:
            return QuerySet(f"between 1 and {k - 1} rows are outside the query set (e.g. "
                            "missing values); releasing it would disclose their number "
                            "(complement rule)", None)
        return QuerySet(None, Gate(_GATE_KEY, "query set", np.ones(1, dtype=np.bool_)))

    async def cell_gates(self, name: str, cells: Sequence[str], counts: AShare,
                         per_contributor: AShare) -> tuple[Gate, Gate]:
        """Per cell: [count >= k] and, with a ledger, every sum of the cell over contributors
        that this release would newly expose (:mod:`.ledger`) 0 or >= k. ``counts`` has
        shape (cells,), ``per_contributor`` (contributors, cells). One circuit: one AND
        round more than :meth:`at_least` when the ledger exposes a sum; opens one bit per
        cell and one per exposed sum. Returns the gate of [count >= k] alone and the gate of
        both."""
        k = self.rules.min_cell_count
        derived = [d for j, cell in enumerate(cells)
                   for d in self._derived(cell, per_contributor[:, j])]
        if not derived:
            primary = await self.at_least(name, counts)
            return primary, primary
        L, q = len(cells), len(derived)
        r = concat([d.value for d in derived])
        signs = await compare.sign_bits(self.session, concat([counts - k, r - 1, r - k]), 64)
        leaks = await boolean.and_(self.session, signs[L:L + q] ^ 1, signs[L + q:])
        opened = await self._open_bits(
            f"{name} >= {k}; {q} sum(s) of them over contributors derivable with the "
            f"ledger: 0 or >= {k}", "min_cell_count, release ledger",
            concat_bits([signs[:L], leaks]))
        exposed = {d.cell for d, leak in zip(derived, opened[L:], strict=True) if leak}
        primary = Gate(_GATE_KEY, f"{name} >= {k}", ~opened[:L])
        return primary, primary.narrowed(
            "no sum exposed by the release ledger",
            np.array([cell not in exposed for cell in cells], dtype=np.bool_))

    async def ledger_gates(self, name: str, cells: Sequence[str],
                           per_contributor: AShare) -> Gate:
        """Per cell, whether every sum of it over contributors that this release would
        newly expose with the ledger (:mod:`.ledger`) is 0 or >= k: the ledger part of
        :meth:`cell_gates` for counts that may open at 0 (a numerator, a complement).
        ``per_contributor`` has shape (contributors, cells). Opens one bit per exposed sum
        in one circuit; nothing without a ledger or when no sum is exposed."""
        derived = [(j, d) for j, cell in enumerate(cells)
                   for d in self._derived(cell, per_contributor[:, j])]
        keep = np.ones(len(cells), dtype=np.bool_)
        if derived:
            safe = await self.safe_residuals(
                f"{name}: {len(derived)} sum(s) over contributors derivable with the ledger",
                concat([d.value for _, d in derived]))
            for (j, _), ok in zip(derived, safe.allowed, strict=True):
                keep[j] &= bool(ok)
        return Gate(_GATE_KEY, f"{name}: no sum exposed by the release ledger", keep)

    async def exposes(self, cell: str, per_contributor: AShare) -> bool:
        """Whether opening ``cell`` (a complement, e.g. missing values) would expose, with
        the ledger, a sum of it over contributors between 1 and k - 1 (opens one bit per
        derived sum; nothing without a ledger)."""
        derived = self._derived(cell, per_contributor)
        if not derived:
            return False
        safe = await self.safe_residuals(f"{len(derived)} sum(s) of {cell} derivable with "
                                         "the ledger", concat([d.value for d in derived]))
        return not safe.all()

    async def safe_residuals(self, name: str, residuals: AShare) -> Gate:
        """Open, per shared residual r (one-dimensional, r >= 0), [r == 0 or r >= k]."""
        k = self.rules.min_cell_count
        if residuals.shape[0] == 0:
            return Gate(_GATE_KEY, name, np.zeros(0, dtype=np.bool_))
        n = residuals.shape[0]
        signs = await compare.sign_bits(self.session, concat([residuals - 1, residuals - k]),
                                        64)
        leaks = await boolean.and_(self.session, signs[:n] ^ 1, signs[n:])
        opened = await self._open_bits(f"{name}: 0 or >= {k}", "complements", leaks)
        return Gate(_GATE_KEY, f"{name}: 0 or >= {k}", ~opened)

    async def smallest(self, name: str, counts: AShare, among: Gate, width: int) -> int:
        """The index of a smallest count among those ``among`` allows (the first, on ties);
        opens which of them equal their minimum. ``width``: bits of the largest count."""
        index = np.flatnonzero(among.allowed)
        if index.size == 0:
            raise ProtocolError("smallest(): no count is allowed")
        if index.size == 1:
            return int(index[0])
        chosen = counts[index]
        low = await compare.min_(self.session, chosen, width + 1)
        wide = AShare(self.session.party, np.broadcast_to(low.a, chosen.shape),
                      np.broadcast_to(low.b, chosen.shape))
        equal = await compare.equals_bits(self.session, chosen, wide, width + 1)
        opened = await self._open_bits(f"{name}: which equal their minimum",
                                       "secondary suppression", equal)
        return int(index[int(np.flatnonzero(opened)[0])])

    async def all_within(self, name: str, x: AShare, low: int, high: int) -> bool:
        """Open one bit: whether every element of ``x`` (signed) lies in [low, high].

        See the module docstring for the circuit; requires 1 <= high - low + 1 <= 2^63.
        """
        width = high - low + 1
        if not 1 <= width <= 1 << 63:
            raise ValueError(f"range [{low}, {high}] is empty or wider than 2^63")
        n = x.shape[0]
        if n == 0:
            return True
        s = self.session
        y = x - low
        msbs = await compare.sign_bits(s, concat([y, y - width]), 64)
        inside = await boolean.and_(s, msbs[:n] ^ 1, msbs[n:])
        outside = await bits.b2a_sum(s, inside ^ 1, axis=0)
        is_zero = await compare.zero_bits(s, outside.reshape(1), max(1, n.bit_length()))
        opened = await self._open_bits(f"every {name} in [{low}, {high}]", "range check",
                                       is_zero)
        return bool(opened[0])

    # -- openings ----------------------------------------------------------------------

    async def open(self, name: str, values: AShare, gate: Gate) -> list[int | None]:
        """Open the values (signed) whose gate bit is set; None for the others. One round,
        or none when nothing is allowed; every party selects the same elements."""
        if len(gate) != values.shape[0]:
            raise ProtocolError(f"gate '{gate.name}' has {len(gate)} bits for "
                                f"{values.shape[0]} values")
        index = np.flatnonzero(gate.allowed)
        out: list[int | None] = [None] * values.shape[0]
        if index.size == 0:
            return out
        with self._opening(name, "values", gate.name):
            opened = await arith.open_(self.session, values[index])
        for i, v in zip(index, to_signed(opened), strict=True):
            out[int(i)] = int(v)
        return out

    async def open_one(self, name: str, value: AShare, gate: Gate) -> int:
        """Open one value (shape (1,)) that ``gate`` allows."""
        (opened,) = await self.open(name, value, gate)
        if opened is None:
            raise ProtocolError(f"gate '{gate.name}' does not allow opening {name}")
        return opened


def concat_bits(parts: Sequence[boolean.BShare]) -> boolean.BShare:
    """One boolean sharing of several (one-dimensional), in order."""
    return boolean.BShare(parts[0].party, np.concatenate([p.a for p in parts]),
                          np.concatenate([p.b for p in parts]))
