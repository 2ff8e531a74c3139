"""Running one agreed plan on this node: load shares, compute with the peers, open, store.

Each of the three nodes runs this at the same time for the same plan and session id. It
decrypts only its own share pairs of the pinned dataset versions (the columns the analysis
reads; :mod:`dic_connector.trust.keyring`), pools them in dataset-id order, opens mutually
authenticated TLS channels to the two peers (a session on :class:`mpc.mux.ChannelPool`), agrees
session keys (:meth:`mpc.session.Party.session`), derives the record keys when the plan
perturbs counts (:mod:`.cellkeys`: from the TLS keys and the peers' verified certificates)
and runs the analysis program, which
enforces disclosure control before it opens anything. What is opened goes to the three
nodes; it is stored as the result, with an audit entry holding the transcript of every
opening (name, kind, number of elements, recipients, the rule that allowed it; no value),
the rules applied and the SHA-256 of the result, so the three nodes' results can be
compared.

A pinned version erased since the plan was agreed (superseded by a newer version, or its
dataset withdrawn) fails the computation on this node while it loads, before any channel
opens: every pinned version must still be committed, and every blob read must still be
there (an erasure removes a version's blobs and key at once), so a node computes on the
whole version as loaded before the erasure committed or not at all. Its peers then fail
their MPC session (:class:`mpc.errors.PeerError`).

Several computations may run at once (up to ``max_concurrent_computations``, admitted by
:mod:`.coordinator`): each is its own session (id, step counter, keys) on the node's one
long-lived channel pool (:class:`mpc.mux.ChannelPool`, owned by the app's lifecycle): one
mutual-TLS connection per peer pair, shared by every session and dialled anew after a
failure. A peer that stops answering makes the session fail with
:class:`mpc.errors.PeerError` after ``mpc_timeout_s`` and the request is marked failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from dic_connector.errors import ConfigError
from dic_connector.node.analyses.base import Inputs
from dic_connector.node.analyses.catalog import get_analysis
from dic_connector.node.analyses.ledger import Ledger, Released
from dic_connector.node.analyses.lineage import declared_differences, merge_differences
from dic_connector.node.analyses.manifest import ColumnInfo
from dic_connector.node.analyses.perturbation import record_keys
from dic_connector.node.config import NodeConfig
from dic_connector.node.coordination.cellkeys import node_pair_secrets
from dic_connector.node.coordination.verify import Plan, manifest_info, reason_of
from dic_connector.node.store.unit_of_work import Store, UnitOfWork
from dic_connector.vocabulary import RequestStatus
from mpc.channels import PeerAddress
from mpc.mux import ChannelPool
from mpc.session import Party
from mpc.sharing import AShare, concat

#: How long the three nodes wait for each other's MPC channels to come up.
CONNECT_TIMEOUT_S = 30.0

log = logging.getLogger("dic_connector.node.coordination")


def result_digest(aggregates: dict[str, Any]) -> str:
    """SHA-256 of the result as sorted, compact JSON (results may hold floats, which the
    canonical form refuses; Python writes a float the same way on every node)."""
    text = json.dumps(aggregates, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


async def load_inputs(uow: UnitOfWork, config: NodeConfig, plan: Plan,
                      columns_of: Callable[[dict[str, ColumnInfo]], list[str]]) -> Inputs:
    """This node's pooled share pairs of the columns the analysis reads."""
    parts: dict[str, list[AShare]] = defaultdict(list)
    segments: list[tuple[str, int]] = []
    manifest: dict[str, ColumnInfo] = {}
    declared = []
    for dataset_id in sorted(plan.versions):
        version = await uow.versions.committed(plan.versions[dataset_id])  # not erased
        dataset = await uow.datasets.get(dataset_id)
        manifest = manifest_info(version.manifest)
        for name in columns_of(manifest):
            blob = await uow.versions.read_blob(version.id, name)
            parts[name].append(AShare.from_bytes(config.node_index, blob, version.row_count))
        segments.append((dataset.site_id, version.row_count))
        # every version's declaration, erased ones too (their manifests stay)
        declared += [declared_differences(v.id, v.manifest)
                     for v in await uow.versions.all(dataset_id)]
    return Inputs(columns={name: concat(p) for name, p in parts.items()}, manifest=manifest,
                  segments=tuple(segments), contributors=plan.contributors,
                  differences=merge_differences(declared))


async def load_ledger(uow: UnitOfWork, config: NodeConfig,
                      datasets: Iterable[uuid.UUID] | None = None) -> Ledger:
    """This node's release ledger, its shares decrypted, as the analyses read it; with
    ``datasets``, the entries of their scope alone (the ones the plan's ledger head names:
    an entry of a computation in another scope, finishing meanwhile, stays out, so the three
    nodes load the same entries)."""
    releases = []
    site_of: dict[str, str] = {}  # dataset id -> site, for messages naming a contributor
    scope = None if datasets is None else await uow.ledger.scope(str(d) for d in datasets)
    for record in await uow.ledger.all(scope):
        shape = (len(record.contributors), len(record.cells))
        flat = AShare.from_bytes(config.node_index, record.shares, shape[0] * shape[1])
        for contributor in record.contributors:
            dataset_id = contributor.split("/", 1)[0]
            if dataset_id not in site_of:
                try:
                    found = await uow.datasets.find(uuid.UUID(dataset_id))
                except ValueError:  # not a dataset id: name it as it is
                    found = None
                site_of[dataset_id] = found.site_id if found is not None else dataset_id
        sites = tuple(site_of[c.split("/", 1)[0]] for c in record.contributors)
        releases.append(Released(str(record.request_id), record.cells, record.opened,
                                 record.contributors, flat.reshape(*shape), record.columns,
                                 sites))
    return Ledger(tuple(releases))


def mpc_addresses(config: NodeConfig) -> list[PeerAddress]:
    """Where the three nodes' MPC listeners are, and their certificate names."""
    return [PeerAddress(p.mpc_host, p.mpc_port, p.name) for p in config.peers]


async def compute(store: Store, config: NodeConfig, plan: Plan, session_id: bytes,
                  pool: ChannelPool | None = None) -> None:
    """Run ``plan`` (the request is ``running`` here) and record its end, whatever happens.

    ``pool`` is the node's channel pool (None: a pool for this computation alone)."""
    actor = f"node:{config.node_id}"
    try:
        if config.tls is None or not config.coordinated:
            raise ConfigError("computing needs 'tls' and 'peers' in the config")
        async with store.reading() as uow:
            req = await uow.requests.get(plan.request_id)
            recipe = get_analysis(req.analysis, req.analysis_version)
            parameters = dict(req.parameters)
            inputs = await load_inputs(uow, config, plan,
                                       lambda m: recipe.columns(parameters, m))
            ledger = await load_ledger(uow, config, plan.versions)
        own = None
        if pool is None:
            own = pool = ChannelPool(config.node_index, mpc_addresses(config), config.tls)
        try:
            if own is not None:
                await own.start()
            channels = await pool.open(session_id, CONNECT_TIMEOUT_S)
            party = Party(channels, float(config.mpc_timeout_s))
            try:
                if plan.perturbation is not None:
                    names = (config.peers[0].name, config.peers[1].name, config.peers[2].name)
                    secrets = node_pair_secrets(config.tls, channels, config.node_index, names)
                    inputs = dataclasses.replace(inputs, record_keys=record_keys(
                        secrets, inputs.contributors, tuple(n for _, n in inputs.segments)))
                async with party.session(session_id) as session:
                    # without the ledger check the release is still recorded on it
                    release = await recipe.run(session, inputs, parameters, plan.rules,
                                               ledger if plan.check_ledger else None)
            finally:
                await party.close()
        finally:
            if own is not None:
                await own.close()
        aggregates = release.as_result()
        async with store.unit_of_work() as uow:
            await uow.results.store(plan.request_id, aggregates)
            recorded, read = release.recorded, recipe.typed_columns(parameters,
                                                                    inputs.manifest)
            if not release.refused and (recorded is not None or read):
                # on the ledger by the columns it read, and by its cells if it has any
                await uow.ledger.add(
                    plan.request_id, recorded.cells if recorded else (),
                    recorded.opened if recorded else (), inputs.contributors,
                    recorded.counts.to_bytes() if recorded else b"", read)
            await uow.requests.set_status(plan.request_id, RequestStatus.COMPLETED,
                                          "result opened under disclosure control")
            await uow.audit.append(actor, "result.open", f"request:{plan.request_id}",
                                   {"analysis": recipe.name,
                                    "opened": [o.as_json() for o in release.transcript],
                                    "rules": release.rules.as_json(),
                                    "min_cell_count": plan.min_cell_count,
                                    "min_subset_size": plan.rules.min_subset_size,
                                    "max_levels": plan.max_levels,
                                    "check_ledger": plan.check_ledger,
                                    "perturbation": None if plan.perturbation is None
                                    else plan.perturbation.as_canonical(),
                                    "result_sha256": result_digest(aggregates)})
    except Exception as exc:  # every failure ends the request, with its reason
        log.error("computation of request %s failed on %s", plan.request_id, config.node_id,
                  exc_info=exc)
        async with store.unit_of_work() as uow:
            await uow.requests.set_status(plan.request_id, RequestStatus.FAILED,
                                          f"computation failed on {config.node_id}: "
                                          f"{reason_of(exc)}")
            await uow.audit.append(actor, "compute.fail", f"request:{plan.request_id}",
                                   {"reason": reason_of(exc)})
