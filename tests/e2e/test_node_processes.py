"""Three real node processes (``dic node serve``) on PostgreSQL, talking mutual TLS: a
connector uploads, owners approve at different nodes, a researcher's request runs on all
three; a killed node makes a request wait and a restarted one lets it finish; an owner's
deletion erases the shares in all three databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.trust import payloads, signing
from dic_connector.vocabulary import Role

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
MANIFEST = {"columns": [
    {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "unit": "a"},
    {"name": "ecog", "kind": "categorical", "column": "ecog", "scale": 0,
     "levels": ["0", "1", "2"]},
    {"name": "ecog=0", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "0"},
    {"name": "ecog=1", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "1"},
    {"name": "ecog=2", "kind": "one_hot", "column": "ecog", "scale": 0, "level": "2"},
]}
PEOPLE = {"alice": (Role.RESEARCHER, None), "owner_tm": (Role.DATA_OWNER, "tm"),
          "owner_tr": (Role.DATA_OWNER, "tr"), "admin": (Role.ADMIN, None)}


def _table(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ecog = rng.choice(3, rows, p=[0.5, 0.4, 0.1])
    return np.column_stack([rng.integers(38, 92, rows), ecog,
                            np.eye(3, dtype=np.int64)[ecog]]).astype(np.int64)


@dataclass
class Nodes:
    local: LocalNodes
    logs: Path
    dsns: list[str]
    keys: dict[str, Ed25519PrivateKey]

    def url(self, node: int) -> str:
        return self.local.urls[node]

    async def call(self, node: int, method: str, path: str, who: str,
                   body: Any = None, ok: tuple[int, ...] = (200, 201)) -> Any:
        return await self.local.call(node, method, path, who, body, ok=ok)

    async def wait_for(self, node: int, request_id: str, statuses: set[str],
                       timeout_s: float = 60.0) -> dict[str, Any]:
        body: Any = None
        for _ in range(int(timeout_s / 0.1)):
            # 404 until the request has been replicated to this node
            body = await self.call(node, "GET", f"/v1/requests/{request_id}", "alice",
                                   ok=(200, 404))
            if body.get("status") in statuses:
                return dict(body)
            await asyncio.sleep(0.1)
        raise AssertionError(f"node-{node}: {body}")

    async def submit(self, node: int, analysis: str, parameters: dict[str, Any],
                     datasets: list[str]) -> str:
        study = await self.call(node, "POST", "/v1/studies", "alice",
                                {"title": "Adrenal SBRT pooled"})
        payload = payloads.analysis_request(study["id"], "alice", analysis, datasets, parameters)
        body = await self.call(node, "POST", f"/v1/studies/{study['id']}/requests", "alice",
                               signing.signed(payload, self.keys["alice"]))
        return str(body["id"])

    async def approve(self, node: int, request_id: str, site: str) -> None:
        await self.wait_for(node, request_id, {"awaiting_approval", "approved"})
        await self.call(node, "POST", f"/v1/requests/{request_id}/approvals", f"owner_{site}",
                        signing.signed(payloads.approval(request_id, site),
                                       self.keys[f"owner_{site}"]))


async def _database(dsn: str) -> str:
    name = f"e2e_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return dsn.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
async def nodes(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Nodes]:
    dsns = [await _database(postgres_dsn) for _ in range(3)]
    deployment = write_local_deployment(tmp_path, database_urls=dsns, extra={
        "coordination_interval_s": 0.2, "mpc_timeout_s": 10})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    async with aiohttp.ClientSession() as http:
        local = LocalNodes(deployment, http)
        local.tokens = await register_people(deployment, PEOPLE, keys)
        local.start(tmp_path / "logs")
        try:
            await local.wait_ready()
            yield Nodes(local, tmp_path / "logs", dsns, keys)
        finally:
            await local.stop()


async def _blob_counts(dsns: list[str]) -> list[int]:
    counts = []
    for dsn in dsns:
        conn = await asyncpg.connect(dsn)
        try:
            counts.append(int(await conn.fetchval("SELECT count(*) FROM share_blobs")))
        finally:
            await conn.close()
    return counts


async def test_three_node_processes_compute_wait_recover_and_erase(nodes: Nodes) -> None:
    endpoints = [NodeEndpoint(nodes.url(i), f"node-{i}") for i in range(3)]
    tm, tr = _table(36, 1), _table(28, 2)
    for site, table in (("tm", tm), ("tr", tr)):
        await Uploader(endpoints, nodes.local.deployment.pki[f"connector.{site}"], site,
                       timeout_s=30).upload("pilot_adrenal", table.copy(), MANIFEST)
    listing = await nodes.call(0, "GET", "/v1/datasets", "alice")
    datasets = {d["site"]: d["id"] for d in listing}
    assert set(datasets) == {"tm", "tr"}

    # submitted at node 1, approved at nodes 0 and 2, computed by all three
    request_id = await nodes.submit(1, "median", {"column": "age"},
                                    [datasets["tm"], datasets["tr"]])
    await nodes.approve(0, request_id, "tm")
    await nodes.approve(2, request_id, "tr")
    results = []
    for node in range(3):
        state = await nodes.wait_for(node, request_id, {"completed", "failed"})
        assert state["status"] == "completed", state
        result = await nodes.call(node, "GET", f"/v1/requests/{request_id}/result", "alice")
        results.append(result["aggregates"])
    assert results[0] == results[1] == results[2]
    pooled = np.concatenate([tm[:, 0], tr[:, 0]])
    assert results[0]["n"] == 64
    assert float(results[0]["median"]) == pytest.approx(float(np.median(pooled)))

    # node 2 dies: the next request waits, naming it; restarted, it completes
    nodes.local.kill(2)
    second = await nodes.submit(0, "frequency", {"column": "ecog"}, [datasets["tm"]])
    await nodes.approve(1, second, "tm")
    state = await nodes.wait_for(0, second, {"waiting_for_nodes"})
    assert "node-2" in state["status_reason"]
    nodes.local.start_node(2, nodes.logs)
    await nodes.local.wait_ready(indices=[2])
    for node in range(3):
        state = await nodes.wait_for(node, second, {"completed", "failed"})
        assert state["status"] == "completed", state
    result = await nodes.call(2, "GET", f"/v1/requests/{second}/result", "alice")
    counts = np.bincount(tm[:, 1], minlength=3)
    assert result["aggregates"]["levels"] == {
        str(level): int(c) if c >= 5 else "<5" for level, c in enumerate(counts)}

    # the owner deletes at node 0: the shares are erased in all three databases
    assert min(await _blob_counts(nodes.dsns)) > 0
    await nodes.call(0, "DELETE", f"/v1/datasets/{datasets['tm']}", "owner_tm")
    for _ in range(100):
        counts_left = await _blob_counts(nodes.dsns)
        if counts_left == [len(MANIFEST["columns"])] * 3:  # only tr's version remains
            break
        await asyncio.sleep(0.1)
    assert counts_left == [len(MANIFEST["columns"])] * 3
    for node in range(3):
        verified = await nodes.call(node, "GET", "/v1/audit/verify", "admin")
        assert verified["ok"], verified
