"""Delta versions: a new version sent as "the base version's rows at these positions, then
these fresh rows", so an update costs shares of the changed rows only (issue 13, part 4).

A full version shares every row of the new pull again (16 bytes per row, column and node).
Most updates change a few patients. The connector knows, without keeping a row, which rows
of the newest committed version (the *base*) the new pull still holds: the lineage state
(:mod:`.lineage`) keeps the keyed digest of every shared row by its row position in the
base (:attr:`~.lineage.LineageState.order`), saved with the run record in one transaction,
and the new pull's rows are digested the same way (:meth:`~.lineage.RowDigests.row_keys`:
digest and ordinal among equal rows, so duplicates match one to one). Rows are identified
across versions by these keyed values only (a MAC under the connector's lineage key of the
whole encoded row; the patient key is never part of the matrix), never by a plaintext id.
Why rows are matched by the row digest and not replaced by patient: replacing a changed
patient's row *in place* would tell the nodes "the patient at position p changed" as
opposed to "a row left, a row arrived". With whole-row digests a change is a removal plus
an addition, exactly what the lineage already declares. Keyed pseudonyms of the patients
(:mod:`.incremental`) are kept by position at the connector only, to find the base rows of
the patients an incremental pull re-reads; they never reach the nodes.

:func:`plan_upload` gives the :class:`UploadPlan` of the new version:

- ``keep``: the base positions whose row is in the new pull (ascending, as runs
  ``[start, stop)`` in the manifest's ``delta`` section), and
- ``fresh``: the new pull's rows not in the base (new patients, and the new values of
  changed ones), in random order, shared as a full upload shares its rows.

The new version is ``base[keep]`` followed by the fresh rows; each node composes it from
its own share pairs of the base (``dic_connector.node.store.delta``) inside the same
two-phase commit as a full upload. A full upload stays the answer when there is no base to
build on (the first version, a lost lineage key, a stored state without row order), when
nothing of the base survives, when the kept positions fall into more than
:data:`MAX_KEEP_RUNS` runs (the manifest would grow with the rows), and, decided by the
nodes, when the base is no longer committed on every node or its columns differ: a node
refuses the delta's ``begin`` and the connector uploads the version in full
(:mod:`.pipeline`). Under ``updates: delta`` a full version's rows are shared in a random
order too (:attr:`UploadPlan.order`), so that base positions carry no meaning of the
source (e.g. the order in which patients were created).

What the nodes learn from a delta version, beyond a full one. Its row count and its
manifest's declared lineage already tell every node how many rows left the base (``r``)
and how many are new (``a``). The delta adds *which* base positions survive: the nodes can
link a row of the new version to a row of the base, and, over many versions, follow how
long each (still secret) row stayed unchanged, a profile of update frequency per row. The
positions are those of a random order, so they say nothing of the patient's identity or of
the source's order, and no value: a changed row is a removed one plus a fresh one, fresh
shares, at a random place after the kept rows. The counts are exactly the declared ones: a
node checks that the delta agrees with the lineage declared against the base
(``removed = base rows - kept``, ``added = fresh rows``), so a connector cannot declare one
difference and send another. The lineage rule and the disclosure ledger
(:mod:`dic_connector.node.analyses.lineage`) work on those declared counts and are unchanged:
a delta version is differenced with its base under exactly the rule a full rebuild is.

Copied shares are not re-randomised. A zero-sharing that each node can apply on its own is
known entirely to every node (in 2-out-of-3 replicated sharing a node holding two of its
three parts knows the third), so it hides nothing from any node, which knows the kept
positions anyway; at rest the blobs are sealed under each version's own key with fresh
nonces, so no two ciphertexts coincide. What re-randomising would add is protection against
a *mobile* adversary, node i's shares of the base leaked at one time and node i+1's of the
delta version at another (together a copied row's three parts); that needs a resharing
round over the peer channel (Araki et al., CCS 2016, section 2.2), not done here, and a
full version (``updates: full``) is the way to refresh every share.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from dic_connector.connector.lineage import Keys, LineageState, as_void

#: Most runs of kept base positions a delta version declares; more, and it is sent in full.
MAX_KEEP_RUNS = 10_000

Positions = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class DeltaPlan:
    """A version built as ``base[keep]`` followed by the new pull's rows ``fresh``."""

    base: uuid.UUID
    #: ascending positions of the base's rows to keep
    keep: Positions
    #: the new pull's rows (table row indices) to share, in the order they are appended
    fresh: Positions

    def runs(self) -> list[list[int]]:
        """:attr:`keep` as runs ``[start, stop)`` of consecutive positions."""
        return keep_runs(self.keep)

    def section(self) -> dict[str, Any]:
        """The manifest's ``delta`` section."""
        return {"base": str(self.base), "keep": self.runs()}


@dataclass(frozen=True, eq=False)
class UploadPlan:
    """How the new version is sent: :attr:`delta`, or in full in the row :attr:`order`."""

    #: a full upload's rows: row i of the version is row ``order[i]`` of the table
    order: Positions
    #: a delta version on the newest committed version, if one is worth sending
    delta: DeltaPlan | None = None
    #: whether the table may be sent in full when the nodes refuse the delta (False for
    #: an incremental pull, whose table holds the changed patients only: :mod:`.incremental`)
    full_fallback: bool = True

    def positions(self, row_keys: Keys, base_order: Keys, *, as_delta: bool) -> Keys:
        """The version's row keys by row position, as sent: delta (``as_delta``) or full."""
        if as_delta and self.delta is not None:
            return np.concatenate([base_order[self.delta.keep], row_keys[self.delta.fresh]])
        return row_keys[self.order]

    def table_rows(self, row_keys: Keys, base_order: Keys, *, as_delta: bool) -> Positions:
        """For each row position of the version as sent, the table row it holds: a kept
        base row is the table row with its key (the rows are equal), a fresh or full one
        the row sent there."""
        if as_delta and self.delta is not None:
            return np.concatenate([matching_rows(base_order[self.delta.keep], row_keys),
                                   self.delta.fresh])
        return self.order


def matching_rows(keys: Keys, row_keys: Keys) -> Positions:
    """For each of ``keys``, the index of the equal key in ``row_keys`` (all are there)."""
    n = row_keys.shape[0]
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    _, inverse = np.unique(as_void(np.concatenate([row_keys, keys])), return_inverse=True)
    inverse = inverse.ravel()
    lookup = np.full(int(inverse.max()) + 1, -1, dtype=np.int64)
    lookup[inverse[:n]] = np.arange(n, dtype=np.int64)
    found = lookup[inverse[n:]]
    if (found < 0).any():
        raise ValueError("a kept row's key is not among the table's")
    return found


def keep_runs(keep: Positions) -> list[list[int]]:
    """Ascending positions as runs ``[start, stop)`` (``[]`` for none)."""
    if keep.shape[0] == 0:
        return []
    breaks = np.flatnonzero(np.diff(keep) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [keep.shape[0]]])
    return [[int(keep[a]), int(keep[b - 1]) + 1] for a, b in zip(starts, stops, strict=True)]


def _shuffled(values: Positions, rng: np.random.Generator) -> Positions:
    return values[rng.permutation(values.shape[0])] if values.shape[0] > 1 else values


def plan_upload(state: LineageState, row_keys: Keys, *,
                rng: np.random.Generator | None = None) -> UploadPlan:
    """The plan of a version holding the rows with ``row_keys`` (in table row order) after
    the committed versions ``state`` knows, whose newest one's row order is
    :attr:`~.lineage.LineageState.order`.

    Rows match when their keys (digest and ordinal among equal rows) are equal, so of k
    equal rows in the base and j in the new pull, min(k, j) are kept. ``rng`` orders the
    fresh rows and a full upload's rows (default: seeded from :mod:`secrets`).
    """
    rng = rng or np.random.default_rng(secrets.randbits(128))
    rows = row_keys.shape[0]
    order = _shuffled(np.arange(rows, dtype=np.int64), rng)
    base = state.order
    if not state.versions or base.shape[0] == 0 or rows == 0:
        return UploadPlan(order)
    new, old = as_void(row_keys), as_void(base)
    keep = np.flatnonzero(np.isin(old, new)).astype(np.int64)
    if keep.shape[0] == 0 or len(keep_runs(keep)) > MAX_KEEP_RUNS:
        return UploadPlan(order)
    fresh = _shuffled(np.flatnonzero(~np.isin(new, old[keep])).astype(np.int64), rng)
    return UploadPlan(order, DeltaPlan(state.versions[-1], keep, fresh))
