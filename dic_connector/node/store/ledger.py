"""The release ledger of one node: every completed release's columns and cells (sealed shares).

Disclosure control across requests (``docs/disclosure.md``) needs to know, for a new release,
what earlier releases read and opened: which typed columns (the version lineage rule), which
cells (a level of a categorical, the missing values of a column), over which contributing
dataset versions, and each contributor's count in each cell, so that every sum the two
together would let a researcher derive can be checked under MPC (:mod:`dic_connector.node.analyses.ledger`). The counts are stored as this node's share
pairs only, sealed with AES-256-GCM under a key of the entry's own, wrapped by the node key
(:mod:`dic_connector.trust.keyring`, bound to this node and the request id): no node can
read a count, and the three nodes hold the same entries because they write them at the end
of the same computation.

:meth:`LedgerRepository.head` (entry count and a digest of the request ids) of the
release's **scope** (:meth:`LedgerRepository.scope`: the datasets linked to the request's
through earlier entries) is what the three nodes compare in a plan, so that all of them
check a release against the same entries; computations in disjoint scopes run at once
(issue 17), and an entry one of them adds never changes the other's scope or head. Entries outlive the dataset versions they describe: a deleted version can never be
computed on again, but its released sums still combine with later releases.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.models import LedgerEntry
from dic_connector.trust.keyring import NodeKeyring, SealedBlob, WrappedKey

#: The "column" the shares of a ledger entry are sealed as (the id is the request's).
SEALED_AS = "release-ledger"


@dataclass(frozen=True)
class LedgerHead:
    """How many entries the ledger holds and a digest of their request ids."""

    entries: int
    digest: str

    def as_json(self) -> dict[str, object]:
        return {"entries": self.entries, "sha256": self.digest}


@dataclass(frozen=True)
class LedgerRecord:
    """One entry as stored, with this node's share bytes decrypted."""

    request_id: uuid.UUID
    cells: tuple[str, ...]
    opened: tuple[bool, ...]
    contributors: tuple[str, ...]
    shares: bytes
    columns: tuple[str, ...] = ()


class LedgerRepository:
    """Append and read the release ledger (entries are never changed)."""

    def __init__(self, session: AsyncSession, keyring: NodeKeyring) -> None:
        self._session = session
        self._keyring = keyring

    async def add(self, request_id: uuid.UUID, cells: Sequence[str], opened: Sequence[bool],
                  contributors: Sequence[str], shares: bytes,
                  columns: Sequence[str] = ()) -> None:
        """Record a release; ``shares`` is this node's share pair of the contributors x
        cells matrix (``AShare.to_bytes``; empty without cells), ``columns`` the typed
        columns it read."""
        key, wrapped = self._keyring.new_version_key(request_id)
        sealed = self._keyring.seal(key, request_id, SEALED_AS, shares)
        await insert(self._session, f"ledger entry of request {request_id}", LedgerEntry(
            request_id=request_id, cells=list(cells), opened=[bool(o) for o in opened],
            contributors=list(contributors), columns=list(columns), key_id=wrapped.key_id,
            wrapped_key=wrapped.blob, nonce=sealed.nonce, ciphertext=sealed.ciphertext),
            savepoint=False)  # a second entry of a request: the computation's end fails

    async def all(self, scope: Collection[str] | None = None) -> list[LedgerRecord]:
        """Every entry, oldest first, shares decrypted; with ``scope`` (dataset ids), only
        the entries with a contributor of one of those datasets."""
        rows = await self._session.scalars(
            select(LedgerEntry).order_by(LedgerEntry.created_at, LedgerEntry.request_id))
        out = []
        for row in rows:
            if scope is not None and not _touches(row.contributors, scope):
                continue
            key = self._keyring.unwrap(WrappedKey(row.key_id, row.wrapped_key), row.request_id)
            shares = self._keyring.open(key, row.request_id, SEALED_AS,
                                        SealedBlob(row.nonce, row.ciphertext))
            out.append(LedgerRecord(row.request_id, tuple(row.cells), tuple(row.opened),
                                    tuple(row.contributors), shares,
                                    tuple(row.columns or ())))
        return out

    async def scope(self, datasets: Iterable[str]) -> frozenset[str]:
        """The datasets linked to ``datasets`` through the ledger: ``datasets`` and, again
        and again, every dataset of an entry with a contributor among them (the connected
        component of the graph whose edges are the entries). A release is checked against
        entries of its scope alone (:mod:`dic_connector.node.analyses.ledger` drops the
        rest), so releases in disjoint scopes may run at once; within one they may not."""
        linked = [frozenset(_dataset(c) for c in contributors) for contributors in
                  await self._session.scalars(select(LedgerEntry.contributors))]
        scope = set(datasets)
        grew = True
        while grew:
            grew = False
            for members in linked:
                if members & scope and not members <= scope:
                    scope |= members
                    grew = True
        return frozenset(scope)

    async def head(self, scope: Collection[str] | None = None) -> LedgerHead:
        """Size and digest of the ledger, or with ``scope`` (dataset ids) of its entries with
        a contributor of one of those datasets."""
        rows = await self._session.execute(select(LedgerEntry.request_id,
                                                  LedgerEntry.contributors))
        ids = sorted(str(request_id) for request_id, contributors in rows
                     if scope is None or _touches(contributors, scope))
        return LedgerHead(len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest())


def _dataset(contributor: str) -> str:
    """The dataset id of a contributor (``"<dataset id>/<version id>"``)."""
    return contributor.split("/", 1)[0]


def _touches(contributors: Iterable[str], scope: Collection[str]) -> bool:
    return any(_dataset(c) in scope for c in contributors)
