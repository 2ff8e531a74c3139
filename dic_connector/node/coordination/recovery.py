"""Recovery of upload versions in doubt: a node that voted ready learns the outcome from its peers.

The connector coordinates each upload's two-phase commit (:mod:`dic_connector.connector.upload`;
Gray, "Notes on Data Base Operating Systems", 1978). Once this node voted ready on a version
(state ``prepared``) it may no longer decide alone: the connector may have committed on the
other nodes, and erasing the version here would leave it committed on two nodes and unusable
on all three. If the connector's commit or abort never reached this node (it was down, or the
connector died), the version is *in doubt*. This is the cooperative termination protocol of
Bernstein, Hadzilacos and Goodman, "Concurrency Control and Recovery in Database Systems"
(1987), §7.4: the participant asks the other participants what they know, over the peer API
(``GET /v1/peer/versions/{id}``, mutual TLS, :func:`dic_connector.node.api.peer.version_state`),
and decides by :func:`decide`:

- ``committed`` on any peer: the connector decided commit (it commits only after all three
  voted ready), so this node commits too;
- ``deleted`` or ``absent`` on a peer, the other peer ``deleted``, ``absent`` or ``prepared``
  (in doubt itself), both answering, and the vote older than the grace period: nobody
  committed, and the connector, which commits only once all three voted ready and then on
  all three nodes at once, is no longer committing (it may still be, within the grace
  period, on a peer that was slow to vote). This node aborts (erases the version's blobs
  and key). A peer in doubt knows no more than this node; the one that is gone decides, as
  in the cooperative termination protocol (an aborted or never-begun participant means
  abort). ``deleted`` may also be a version erased *after* its commit (the owner withdrew
  the dataset, or a newer version superseded it); both erasures reach this node too
  (relayed by the peers, or sent to every node by the connector), so aborting only comes
  first. Without this, a connector that died during the vote (two nodes prepared, the third
  still receiving until its stale-upload cleanup erases it) left two nodes waiting forever;
- otherwise (a peer unreachable or refusing, a peer ``receiving``, both peers ``prepared``:
  every node voted ready and only the connector knows the outcome, the grace period not
  over) it keeps waiting, and nothing is erased.

The node runs :func:`recover_in_doubt` on startup and on every tick of its cleanup loop
(``node.api.app``), in the background: requests are never blocked. Each outcome is audited by
``node:recovery`` (``upload.commit`` / ``upload.abort``, with the peers' answers). The
connector's own commit or abort still works on a prepared version (both are idempotent), and
whichever arrives first wins; the other finds the outcome already applied.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

from dic_connector.errors import CoordinationError
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.enums import VersionState
from dic_connector.node.store.unit_of_work import Store

#: What a peer's version route answers for a version it has never held.
ABSENT = "absent"
#: Peer answers, besides :data:`ABSENT`: a version state's value.
PEER_STATES = frozenset({ABSENT, *(state.value for state in VersionState)})
ACTOR = "node:recovery"


class Outcome(StrEnum):
    """What a node in doubt does with a prepared version."""

    COMMIT = "commit"
    ABORT = "abort"
    WAIT = "wait"


@dataclass(frozen=True)
class Resolution:
    """One version in doubt, what the peers answered (name -> state, or None for no answer)
    and what this node did."""

    version_id: uuid.UUID
    peers: dict[str, str | None]
    outcome: Outcome


def decide(
    peers: dict[str, str | None], prepared_at: dt.datetime, grace: dt.timedelta, now: dt.datetime
) -> Outcome:
    """The outcome for a version this node voted ready on at ``prepared_at``, given each
    peer's answer (a :data:`PEER_STATES` word, or None if it did not answer)."""
    answers = list(peers.values())
    if VersionState.COMMITTED.value in answers:
        return Outcome.COMMIT
    gone = {VersionState.DELETED.value, ABSENT}
    known = {*gone, VersionState.PREPARED.value}
    if (any(a in gone for a in answers) and all(a in known for a in answers)
            and prepared_at <= now - grace):
        return Outcome.ABORT
    return Outcome.WAIT


async def _ask(client: PeerClient, peer: int, version_id: uuid.UUID) -> str | None:
    try:
        answer = await client.call(peer, "GET", f"/v1/peer/versions/{version_id}")
    except CoordinationError:  # unreachable, failing, or refusing (an older node: 404)
        return None
    state = answer.get("state")
    return state if isinstance(state, str) and state in PEER_STATES else None


async def resolve(
    store: Store, client: PeerClient, grace: dt.timedelta, now: dt.datetime | None = None
) -> list[Resolution]:
    """Ask the peers about every version in doubt here and apply what :func:`decide` says."""
    async with store.reading() as uow:
        in_doubt = [(v.id, v.prepared_at or v.created_at) for v in await uow.versions.in_doubt()]
    resolutions = []
    for version_id, prepared_at in in_doubt:
        others = client.others
        answers = await asyncio.gather(*(_ask(client, p, version_id) for p in others))
        peers = {client.name(p): a for p, a in zip(others, answers, strict=True)}
        outcome = decide(peers, prepared_at, grace, now or utcnow())
        if outcome is not Outcome.WAIT:
            outcome = await _apply(store, version_id, outcome, peers)
        resolutions.append(Resolution(version_id, peers, outcome))
    return resolutions


async def _apply(
    store: Store, version_id: uuid.UUID, outcome: Outcome, peers: dict[str, str | None]
) -> Outcome:
    """Commit or abort the version, if it is still prepared (the connector's own commit or
    abort may have arrived meanwhile: then it is left as it is, and WAIT returned)."""
    async with store.unit_of_work() as uow:
        version = await uow.versions.locked(version_id)
        if version.state is not VersionState.PREPARED:
            return Outcome.WAIT
        if outcome is Outcome.COMMIT:
            await uow.versions.commit(version_id)
        else:
            await uow.versions.delete(version_id)
        await uow.audit.append(
            ACTOR,
            f"upload.{outcome.value}",
            f"version:{version_id}",
            {"dataset": str(version.dataset_id), "peers": peers},
        )
    return outcome


async def recover_in_doubt(
    store: Store, config: NodeConfig, now: dt.datetime | None = None
) -> list[Resolution]:
    """:func:`resolve` with a peer client of this node's own, opened only if a version is in
    doubt; the grace period is ``stale_upload_after_s``. Nothing for a node without peers."""
    if not config.coordinated:
        return []
    async with store.reading() as uow:
        if not await uow.versions.in_doubt():
            return []
    async with PeerClient(config) as client:
        resolutions = await resolve(
            store, client, dt.timedelta(seconds=config.stale_upload_after_s), now
        )
    log = logging.getLogger(__name__)
    for r in resolutions:
        log.log(
            logging.INFO if r.outcome is not Outcome.WAIT else logging.DEBUG,
            "upload %s in doubt: peers %s -> %s",
            r.version_id,
            r.peers,
            r.outcome.value,
        )
    return resolutions
