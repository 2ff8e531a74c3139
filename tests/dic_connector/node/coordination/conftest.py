"""Three node apps in one event loop, over real HTTPS with mutual TLS between them and real
MPC channels, each with its own SQLite store; principals and keys registered on all three."""

from __future__ import annotations

import asyncio
import ssl
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

from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import LocalDeployment, write_local_deployment
from dic_connector.node.api import create_app
from dic_connector.node.config import NodeConfig
from dic_connector.node.store import migrate
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust import payloads, signing
from dic_connector.trust.keyring import NodeKeyring
from dic_connector.vocabulary import Role

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
    deployment: LocalDeployment
    configs: list[NodeConfig]
    stores: list[Store]
    runners: list[web.AppRunner | None]
    tokens: list[dict[str, str]]
    keys: dict[str, Ed25519PrivateKey]
    http: aiohttp.ClientSession
    ssl: ssl.SSLContext
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

    async def call(self, node: int, method: str, path: str, who: str,
                   body: Any = None) -> tuple[int, Any]:
        url = self.configs[node].peers[node].api_url + path
        async with self.http.request(
                method, url, json=body, ssl=self.ssl, server_hostname=f"node-{node}",
                headers={"Authorization": f"Bearer {self.tokens[node][who]}"}) as response:
            return response.status, await response.json(content_type=None)

    def uploader(self, site: str) -> Uploader:
        endpoints = [NodeEndpoint(c.peers[c.node_index].api_url, f"node-{c.node_index}")
                     for c in self.configs]
        return Uploader(endpoints, self.deployment.pki[f"connector.{site}"], site,
                        timeout_s=20, commit_retries=2, retry_delay_s=0.05)

    async def upload(self, site: str, table: npt.NDArray[np.int64]) -> uuid.UUID:
        await self.uploader(site).upload("pilot", table.copy(), MANIFEST)
        status, listing = await self.call(0, "GET", "/v1/datasets", "alice")
        assert status == 200
        self.datasets[site] = next(uuid.UUID(d["id"]) for d in listing if d["site"] == site)
        return self.datasets[site]

    async def submit(self, node: int, analysis: str, parameters: dict[str, Any],
                     sites: tuple[str, ...] = ("tm", "tr")) -> str:
        status, study = await self.call(node, "POST", "/v1/studies", "alice",
                                        {"title": "Adrenal SBRT"})
        assert status == 201, study
        payload = payloads.analysis_request(study["id"], "alice", analysis,
                                           [self.datasets[s] for s in sites], parameters)
        status, body = await self.call(node, "POST", f"/v1/studies/{study['id']}/requests",
                                       "alice", signing.signed(payload, self.keys["alice"]))
        assert status == 201, body
        return str(body["id"])

    async def approve(self, node: int, request_id: str, site: str,
                      decision: str = "approve") -> dict[str, Any]:
        """The owner signs at ``node`` once the request has reached it (as an owner would:
        it appears in their listing)."""
        await self.wait_for(node, request_id, {"awaiting_approval", "approved",
                                               "waiting_for_nodes"})
        status, body = await self.call(
            node, "POST", f"/v1/requests/{request_id}/approvals", f"owner_{site}",
            signing.signed(payloads.approval(request_id, site, decision),
                           self.keys[f"owner_{site}"]))
        assert status == 201, body
        return dict(body)

    async def status(self, node: int, request_id: str) -> dict[str, Any]:
        async with self.stores[node].unit_of_work() as uow:
            req = await uow.requests.find(uuid.UUID(request_id))
            if req is None:
                return {"status": None, "status_reason": None}
            return {"status": req.status.value, "status_reason": req.status_reason}

    async def wait_for(self, node: int, request_id: str, statuses: set[str],
                       timeout_s: float = 30.0) -> dict[str, Any]:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            state = await self.status(node, request_id)
            if state["status"] in statuses:
                return state
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"node-{node}: request {request_id} is {state}, "
                                     f"expected one of {sorted(statuses)}")
            await asyncio.sleep(0.05)

    async def result(self, node: int, request_id: str) -> dict[str, Any]:
        status, body = await self.call(node, "GET", f"/v1/requests/{request_id}/result",
                                       "alice")
        assert status == 200, body
        return dict(body["aggregates"])


async def make_cluster(tmp_path: Path, **extra: Any) -> Cluster:
    deployment = write_local_deployment(
        tmp_path / "deployment",
        database_urls=[f"sqlite+aiosqlite:///{tmp_path / f'node-{i}.db'}" for i in range(3)],
        extra={"coordination_interval_s": 0.05, "mpc_timeout_s": 5, **extra})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    configs = [deployment.config(i) for i in range(3)]
    stores, tokens = [], []
    for config in configs:
        await migrate.upgrade(config.database_url)
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
    client_ssl = ssl.create_default_context(cafile=str(deployment.pki["node-0"].ca_cert))
    cluster = Cluster(deployment, configs, stores, [None, None, None], tokens, keys,
                      aiohttp.ClientSession(), client_ssl)
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
