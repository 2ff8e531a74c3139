"""Three node apps in one event loop, over real HTTPS with mutual TLS between them and real
MPC channels, each with its own SQLite store; principals and keys registered on all three.

People call the nodes as people do, with :mod:`dic_connector.client` over HTTPS; a test
reads or writes a node's store directly only to play a broken or compromised node (a forged
row, a rewritten audit entry, a crash mid-computation) or to see what no API shows (audit
entries' details, share blobs, outbox outcomes)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import numpy.typing as npt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import Admin, AnalysisRequest, DataOwner, NodeClient, Researcher
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import DeploymentFiles, write_local_deployment
from dic_connector.node.api import create_app
from dic_connector.node.config import NodeConfig
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust import signing
from dic_connector.trust.keyring import NodeKeyring
from dic_connector.vocabulary import Role
from tests.conftest import migrated_sqlite

#: Manifest of the uploaded cohort tables, as ``mapping.encode`` writes it.
MANIFEST = {"columns": [
    {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "unit": "a",
     "minimum": 0, "maximum": 120.5},  # a float bound: manifests are not canonical JSON
    {"name": "ecog", "kind": "categorical", "column": "ecog", "scale": 0,
     "levels": ["0", "1", "2"]},
    {"name": "ecog=0", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "0"},
    {"name": "ecog=1", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "1"},
    {"name": "ecog=2", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "2"},
]}
PEOPLE = ("admin", "alice", "owner_tm", "owner_tr")


def cohort(rows: int, seed: int, ecog_p: tuple[float, float, float] = (0.5, 0.4, 0.1)
           ) -> npt.NDArray[np.int64]:
    """An encoded table: age, ecog level index, and ecog one-hot."""
    rng = np.random.default_rng(seed)
    age = rng.integers(38, 92, rows)
    ecog = rng.choice(3, rows, p=list(ecog_p))
    one_hot = np.eye(3, dtype=np.int64)[ecog]
    return np.column_stack([age, ecog, one_hot]).astype(np.int64)


@dataclass
class Cluster:
    """The three nodes, and the people who call them through :mod:`dic_connector.client`:
    researcher alice, the owners of tm and tr, and the admin."""

    deployment: DeploymentFiles
    configs: list[NodeConfig]
    stores: list[Store]
    runners: list[web.AppRunner | None]
    tokens: list[dict[str, str]]
    keys: dict[str, Ed25519PrivateKey]
    http: aiohttp.ClientSession
    alice: Researcher
    owners: dict[str, DataOwner]
    admin: Admin
    datasets: dict[str, uuid.UUID] = field(default_factory=dict)

    async def start_node(self, i: int) -> None:
        config = self.configs[i]
        runner = web.AppRunner(create_app(config, store=self.stores[i]))
        await runner.setup()
        assert config.tls is not None
        await web.TCPSite(runner, config.listen_host, config.listen_port,
                          ssl_context=config.tls.server_context(require_client_cert=False)
                          ).start()
        self.runners[i] = runner

    async def stop_node(self, i: int) -> None:
        runner = self.runners[i]
        if runner is not None:
            await runner.cleanup()
            self.runners[i] = None

    def uploader(self, site: str) -> Uploader:
        endpoints = [NodeEndpoint(c.peers[c.node_index].api_url, f"node-{c.node_index}")
                     for c in self.configs]
        return Uploader(endpoints, self.deployment.pki[f"connector.{site}"], site,
                        timeout_s=20, commit_retries=2, retry_delay_s=0.05)

    async def upload(self, site: str, table: npt.NDArray[np.int64]) -> uuid.UUID:
        await self.uploader(site).upload("pilot", table.copy(), MANIFEST)
        listing = await self.alice.datasets(at=0)
        self.datasets[site] = next(uuid.UUID(d.id) for d in listing if d.site == site)
        return self.datasets[site]

    async def submit(self, node: int, analysis: str, parameters: dict[str, Any],
                     sites: tuple[str, ...] = ("tm", "tr")) -> str:
        """Alice's request in a new study, both at ``node``."""
        study = await self.alice.create_study("Adrenal SBRT", at=node)
        return await self.alice.submit(study, analysis, [self.datasets[s] for s in sites],
                                       parameters, at=node)

    async def approved_count(self, submitted_at: int, approved_at: int) -> str:
        """Alice's count of tm, submitted at one node and approved by tm's owner at
        another (so the approval reaches the rest by replication)."""
        request_id = await self.submit(submitted_at, "count", {}, sites=("tm",))
        await self.approve(approved_at, request_id, "tm")
        return request_id

    async def approve(self, node: int, request_id: str, site: str,
                      decision: str = "approve") -> AnalysisRequest:
        """The owner signs at ``node`` once the request has reached it."""
        [answer] = await self.owners[site].approve(request_id, at=node, decision=decision,
                                                   timeout_s=30)
        return answer

    async def status(self, node: int, request_id: str) -> AnalysisRequest | None:
        """The request as alice sees it at ``node`` through the API; None while it has not
        reached that node."""
        return await self.alice.status(request_id, at=node)

    async def wait_for(self, node: int, request_id: str, statuses: set[str],
                       timeout_s: float = 30.0) -> AnalysisRequest:
        [state] = await self.alice.wait(request_id, until=statuses, nodes=(node,),
                                        timeout_s=timeout_s)
        return state

    async def completed_everywhere(self, request_id: str) -> list[dict[str, Any]]:
        """Wait until every node ended the request, check each completed it, and return
        each node's aggregates (node by node) for the test to compare."""
        states = await self.alice.wait(request_id, until={"completed", "failed"}, timeout_s=30)
        assert all(state.status == "completed" for state in states), states
        return [await self.result(node, request_id) for node in range(3)]

    async def result(self, node: int, request_id: str) -> dict[str, Any]:
        return (await self.alice.result(request_id, nodes=(node,))).aggregates


async def make_cluster(tmp_path: Path, **extra: Any) -> Cluster:
    deployment = write_local_deployment(
        tmp_path / "deployment",
        database_urls=[f"sqlite+aiosqlite:///{tmp_path / f'node-{i}.db'}" for i in range(3)],
        extra={"coordination_interval_s": 0.05, "mpc_timeout_s": 5, **extra})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    configs = [deployment.config(i) for i in range(3)]
    stores, tokens = [], []
    for i, config in enumerate(configs):
        url = await migrated_sqlite(tmp_path / f"node-{i}.db")
        assert url == config.database_url
        store = Store.open(config.database_url, NodeKeyring.generate(config.node_id))
        issued: dict[str, str] = {}
        async with store.unit_of_work() as uow:
            await uow.sites.add("tm", "LMU Munich")
            await uow.sites.add("tr", "Gemelli Rome")
            for name in PEOPLE:
                role = Role.ADMIN if name == "admin" else Role.RESEARCHER if name == "alice" \
                    else Role.DATA_OWNER
                principal = await uow.principals.create(
                    name, role, name.removeprefix("owner_") if role is Role.DATA_OWNER
                    else None, signing.public_key_bytes(keys[name]))
                issued[name] = (await uow.tokens.issue(principal.id, "tests")).token
        stores.append(store)
        tokens.append(issued)
    http = aiohttp.ClientSession()

    def clients(who: str) -> tuple[NodeClient, ...]:
        return deployment.clients(http, tokens, who)

    cluster = Cluster(
        deployment, configs, stores, [None, None, None], tokens, keys, http,
        Researcher("alice", keys["alice"], clients("alice"), poll_s=0.05),
        {site: DataOwner(f"owner_{site}", site, keys[f"owner_{site}"], clients(f"owner_{site}"),
                         poll_s=0.05) for site in ("tm", "tr")},
        Admin("admin", clients("admin")))
    for i in range(3):
        await cluster.start_node(i)
    return cluster


async def close_cluster(cluster: Cluster) -> None:
    for i in range(3):
        await cluster.stop_node(i)
    await cluster.http.close()
    for store in cluster.stores:
        await store.close()


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    made = await make_cluster(tmp_path)
    try:
        yield made
    finally:
        await close_cluster(made)
