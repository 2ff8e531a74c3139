"""Three real node processes (``dic node serve``) on PostgreSQL, talking mutual TLS: a
connector uploads, owners approve at different nodes, a researcher's request runs on all
three; a killed node makes a request wait and a restarted one lets it finish, while a
message its peer answers 404 to holds up nothing behind it; an owner's deletion erases the
shares in all three databases; failed token guesses are answered 429 and show in
``/metrics`` and the access log."""

from __future__ import annotations

import asyncio
import re
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

from dic_connector.client import Admin, DataOwner, Researcher
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.vocabulary import Role
from tests.conftest import create_database

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
SITES = ("tm", "tr")
PEOPLE = {"alice": (Role.RESEARCHER, None), "owner_tm": (Role.DATA_OWNER, "tm"),
          "owner_tr": (Role.DATA_OWNER, "tr"), "admin": (Role.ADMIN, None)}


def _table(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ecog = rng.choice(3, rows, p=[0.5, 0.4, 0.1])
    return np.column_stack([rng.integers(38, 92, rows), ecog,
                            np.eye(3, dtype=np.int64)[ecog]]).astype(np.int64)


@dataclass
class Nodes:
    """The running node processes and the people calling them with the client."""

    local: LocalNodes
    logs: Path
    dsns: list[str]
    alice: Researcher
    owners: dict[str, DataOwner]
    admin: Admin

    def url(self, node: int) -> str:
        return self.local.urls[node]

    async def submit(self, node: int, analysis: str, parameters: dict[str, Any],
                     datasets: list[str]) -> str:
        """Alice's request in a new study, both at ``node``."""
        study = await self.alice.create_study("Adrenal SBRT pooled", at=node)
        return await self.alice.submit(study, analysis, datasets, parameters, at=node)

    async def completed_everywhere(self, request_id: str) -> None:
        states = await self.alice.wait(request_id, until={"completed", "failed"})
        assert all(state.status == "completed" for state in states), states



@pytest.fixture
async def nodes(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Nodes]:
    dsns = [await create_database(postgres_dsn, "e2e") for _ in range(3)]
    deployment = write_local_deployment(tmp_path, database_urls=dsns, extra={
        "coordination_interval_s": 0.2, "mpc_timeout_s": 10,
        "auth": {"failure_refill_per_s": 0.01}})  # 100 s per token: a 429 whatever the pace
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    async with aiohttp.ClientSession() as http:
        local = LocalNodes(deployment, http, await register_people(deployment, PEOPLE, keys))
        async with local.running(tmp_path / "logs"):
            yield Nodes(local, tmp_path / "logs", dsns,
                        Researcher("alice", keys["alice"], local.clients("alice")),
                        {site: DataOwner(f"owner_{site}", site, keys[f"owner_{site}"],
                                         local.clients(f"owner_{site}")) for site in SITES},
                        Admin("admin", local.clients("admin")))


async def _blob_counts(dsns: list[str]) -> list[int]:
    counts = []
    for dsn in dsns:
        conn = await asyncpg.connect(dsn)
        try:
            counts.append(int(await conn.fetchval("SELECT count(*) FROM share_blobs")))
        finally:
            await conn.close()
    return counts


async def _poison(dsn: str) -> str:
    """Node 0 owes node-1 a cancel for a request node-1 never saw: 404 at every attempt."""
    path = f"/v1/peer/requests/{uuid.uuid4()}/cancel"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO peer_outbox (peer, kind, method, path, body, created_at, attempts, "
            "next_attempt_at) VALUES (1, 'cancel', 'POST', $1, '{\"reason\": \"x\"}', now(), "
            "0, now())", path)
    finally:
        await conn.close()
    return path


async def _outbox_row(dsn: str, path: str) -> tuple[Any, ...]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow("SELECT outcome, peer_status, attempts FROM peer_outbox "
                                  "WHERE path = $1", path)
    finally:
        await conn.close()
    return tuple(row)


async def test_three_node_processes_compute_wait_recover_and_erase(nodes: Nodes) -> None:
    endpoints = [NodeEndpoint(nodes.url(i), f"node-{i}") for i in range(3)]
    tm, tr = _table(36, 1), _table(28, 2)
    for site, table in (("tm", tm), ("tr", tr)):
        await Uploader(endpoints, nodes.local.deployment.pki[f"connector.{site}"], site,
                       timeout_s=30).upload("pilot_adrenal", table.copy(), MANIFEST)
    datasets = {d.site: d.id for d in await nodes.alice.datasets(at=0)}
    assert set(datasets) == {"tm", "tr"}

    # submitted at node 1, approved at nodes 0 and 2, computed by all three
    request_id = await nodes.submit(1, "median", {"column": "age"},
                                    [datasets["tm"], datasets["tr"]])
    await nodes.owners["tm"].approve(request_id, at=0)
    await nodes.owners["tr"].approve(request_id, at=2)
    await nodes.completed_everywhere(request_id)
    results = [(await nodes.alice.result(request_id, nodes=(node,))).aggregates
               for node in range(3)]
    assert results[0] == results[1] == results[2]
    pooled = np.concatenate([tm[:, 0], tr[:, 0]])
    assert results[0]["n"] == 64
    assert float(results[0]["median"]) == pytest.approx(float(np.median(pooled)))

    # node 2 dies: the next request waits, naming it; restarted, it completes. Node 0's
    # outbox to node-1 holds a poisoned message ahead of it, which delays nothing
    nodes.local.kill(2)
    poison = await _poison(nodes.dsns[0])
    second = await nodes.submit(0, "frequency", {"column": "ecog"}, [datasets["tm"]])
    await nodes.owners["tm"].approve(second, at=1)
    [state] = await nodes.alice.wait(second, until={"waiting_for_nodes"}, nodes=(0,))
    assert "node-2" in (state.status_reason or "")
    nodes.local.start_node(2, nodes.logs)
    await nodes.local.wait_ready(indices=[2])
    await nodes.completed_everywhere(second)
    result = await nodes.alice.result(second, nodes=(2,))
    counts = np.bincount(tm[:, 1], minlength=3)
    assert result.aggregates["levels"] == {
        str(level): int(c) if c >= 5 else "<5" for level, c in enumerate(counts)}
    outcome, status, attempts = await _outbox_row(nodes.dsns[0], poison)
    assert (outcome, status) in ((None, 404), ("parked", 404)) and attempts >= 1

    # the owner deletes at node 0: the shares are erased in all three databases
    assert min(await _blob_counts(nodes.dsns)) > 0
    await nodes.owners["tm"].delete_dataset(datasets["tm"], at=0)
    for _ in range(100):
        counts_left = await _blob_counts(nodes.dsns)
        if counts_left == [len(MANIFEST["columns"])] * 3:  # only tr's version remains
            break
        await asyncio.sleep(0.1)
    assert counts_left == [len(MANIFEST["columns"])] * 3
    for verified in await nodes.admin.verify_audit():
        assert verified.ok, verified

    # 12 guesses at node 0 with a made-up token: the burst (10) gets 401, then 429
    ca, guess = nodes.local.deployment.ca_context, "dic_" + "ab" * 16 + "_" + "G" * 43
    statuses, retry_after = [], None
    for _ in range(12):
        async with nodes.local.http.get(f"{nodes.url(0)}/v1/studies", ssl=ca,
                                        server_hostname="node-0",
                                        headers={"Authorization": f"Bearer {guess}"}) as answer:
            statuses.append(answer.status)
            retry_after = answer.headers.get("Retry-After")
    assert statuses == [401] * 10 + [429] * 2
    assert retry_after is not None and 90 <= int(retry_after) <= 100
    async with nodes.local.http.get(f"{nodes.url(0)}/metrics", ssl=ca,
                                    server_hostname="node-0") as answer:
        metrics = await answer.text()
    assert 'dic_auth_failures_total{reason="token"} 12.0' in metrics
    throttled = re.findall(r'^dic_auth_throttled_total\{bucket="(?:address|token)"\} (\S+)$',
                           metrics, re.MULTILINE)
    assert sum(float(n) for n in throttled) == 2  # the address's and the token id's ran dry
    assert 'dic_peer_outbox_messages{peer="node-1",state="parked"}' in metrics
    log = (nodes.logs / "node-0.log").read_text()
    assert "dic_connector.node.access: GET /v1/studies 401 - " in log
    assert "dic_connector.node.access: GET /v1/studies 429 - " in log
    assert guess not in log and "ab" * 16 not in log
