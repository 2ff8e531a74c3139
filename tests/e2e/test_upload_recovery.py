"""Issue 16, "commit in doubt", against three real node processes (``dic node serve``,
PostgreSQL, mutual TLS): a node that voted ready on an upload and is killed (SIGKILL) before
the connector's commit or abort reaches it learns the outcome from its peers when it is
restarted, even after the stale-upload timeout (which used to erase the version it had voted
ready on; :mod:`dic_connector.node.coordination.recovery`).

The connector is the real :class:`~dic_connector.connector.upload.Uploader`, over a session
whose client middleware sees each request before it leaves: when the commit (or the abort)
for node-2 is about to be sent, it reads node-2's own ``/metrics`` (``dic_uploads_in_doubt``
1: it voted ready) and kills the process, so the request meets a dead node. Nothing inside
the node processes is patched.

- The connector commits on node-0 and node-1 and reports the upload in doubt; node-2,
  restarted with ``stale_upload_after_s`` shorter than it was down, asks its peers, commits
  (audited by ``node:recovery``), its gauge returns to 0, and an analysis of the dataset
  completes on all three nodes with the right n and mean, with no new upload.
- node-1 votes no (a column lost on the way), the connector aborts, and its abort never
  reaches node-2; restarted after the grace period, node-2 learns that the version is gone
  on both peers and erases its blobs and key (audited), as the others did.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import numpy as np
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import DataOwner, Researcher
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.dev.deployment import LocalNodes, register_people, write_local_deployment
from dic_connector.errors import CoordinationError, UploadError
from dic_connector.trust.dataset_ids import dataset_uuid
from dic_connector.vocabulary import Role
from tests.conftest import create_database

pytestmark = pytest.mark.e2e
MANIFEST = {"columns": [
    {"name": "age", "kind": "numeric", "column": "age", "scale": 0, "unit": "a"},
    {"name": "weight", "kind": "numeric", "column": "weight", "scale": 0, "unit": "kg"},
]}
PEOPLE = {"alice": (Role.RESEARCHER, None), "owner_tm": (Role.DATA_OWNER, "tm")}
#: the node killed between its vote and the outcome
DOUBTING = 2
#: node-2's stale-upload timeout (and recovery grace period) when it is restarted: shorter
#: than the time it was down
RESTART_STALE_S = 1
ROWS = 30
Interfere = Callable[[int, aiohttp.ClientRequest], Awaitable[None]]


@dataclass
class Deployment:
    local: LocalNodes
    logs: Path
    dsns: list[str]
    alice: Researcher
    owner: DataOwner
    #: when node-2 was killed (time.monotonic), 0 before
    killed_at: float = 0.0

    async def fetch(self, node: int, query: str, *args: Any) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.dsns[node])
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    async def states(self, version_id: uuid.UUID) -> list[str]:
        return [str((await self.fetch(i, "SELECT state FROM dataset_versions WHERE id = $1",
                                      version_id))[0]["state"]) for i in range(3)]

    async def blobs(self, version_id: uuid.UUID) -> list[int]:
        return [len(await self.fetch(i, "SELECT 1 FROM share_blobs WHERE version_id = $1",
                                     version_id)) for i in range(3)]

    async def in_doubt_gauge(self, node: int) -> str:
        """The ``dic_uploads_in_doubt`` line of the node's ``/metrics``."""
        async with self.local.http.get(f"{self.local.urls[node]}/metrics",
                                       ssl=self.local.deployment.ca_context,
                                       server_hostname=f"node-{node}") as answer:
            text = await answer.text()
        [line] = [line for line in text.splitlines() if line.startswith("dic_uploads_in_doubt ")]
        return line

    async def upload(self, table: np.ndarray, interfere: Interfere,
                     version_id: uuid.UUID) -> None:
        """tm's upload of ``table`` by the real uploader, each request seen by ``interfere``
        (node index, request) before it is sent."""
        ports = {int(url.rsplit(":", 1)[1]): i for i, url in enumerate(self.local.urls)}

        async def middleware(request: aiohttp.ClientRequest,
                             handler: aiohttp.ClientHandlerType) -> aiohttp.ClientResponse:
            await interfere(ports[request.url.port or 443], request)
            return await handler(request)

        endpoints = [NodeEndpoint(url, f"node-{i}") for i, url in enumerate(self.local.urls)]
        async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
            await Uploader(endpoints, self.local.deployment.pki["connector.tm"], "tm",
                           timeout_s=20, commit_retries=3, retry_delay_s=0.1,
                           session=session).upload("pilot", table, MANIFEST,
                                                   version_id=version_id)

    def kill_at(self, method: str, suffix: str) -> Interfere:
        """Kill node-2 when the request ``method .../<suffix>`` is about to reach it, once
        its own ``/metrics`` show the version in doubt (it voted ready)."""
        async def interfere(node: int, request: aiohttp.ClientRequest) -> None:
            if (node == DOUBTING and request.method == method
                    and request.url.path.endswith(suffix)
                    and self.local.nodes[DOUBTING].process.poll() is None):
                assert await self.in_doubt_gauge(DOUBTING) == "dic_uploads_in_doubt 1.0"
                self.local.kill(DOUBTING)
                self.killed_at = time.monotonic()
        return interfere

    async def restart_after_the_stale_timeout(self) -> None:
        """node-2 back with a stale-upload timeout (the recovery's grace period) shorter
        than it was down, and a cleanup tick of 1 s."""
        path = self.local.deployment.config_files[DOUBTING]
        config = yaml.safe_load(path.read_text())
        config.update(stale_upload_after_s=RESTART_STALE_S, cleanup_interval_s=1)
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        down_s = time.monotonic() - self.killed_at
        if down_s <= RESTART_STALE_S + 0.2:
            await asyncio.sleep(RESTART_STALE_S + 0.2 - down_s)
        self.local.start_node(DOUBTING, self.logs)
        await self.local.wait_ready(indices=[DOUBTING])

    async def recovered(self, version_id: uuid.UUID, action: str,
                        timeout_s: float = 10.0) -> asyncpg.Record:
        """node-2's audit entry of ``action`` by ``node:recovery`` on the version."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = await self.fetch(DOUBTING, "SELECT actor, details FROM audit_log WHERE "
                                    "action = $1 AND object = $2", action,
                                    f"version:{version_id}")
            if rows:
                [entry] = rows
                return entry
            await asyncio.sleep(0.1)
        raise AssertionError(f"node-2 audited no {action} of {version_id} within "
                             f"{timeout_s} s; its log ends:\n{self.local.nodes[DOUBTING].tail()}")


def _table(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(38, 92, ROWS),
                            rng.integers(45, 120, ROWS)]).astype(np.int64)


@pytest.fixture
async def deployment(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Deployment]:
    dsns = [await create_database(postgres_dsn, "e2e") for _ in range(3)]
    files = write_local_deployment(tmp_path, sites=("tm",), database_urls=dsns, extra={
        "coordination_interval_s": 0.2, "mpc_timeout_s": 10})
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    async with aiohttp.ClientSession() as http:
        local = LocalNodes(files, http, await register_people(files, PEOPLE, keys))
        async with local.running(tmp_path / "logs"):
            yield Deployment(local, tmp_path / "logs", dsns,
                             Researcher("alice", keys["alice"], local.clients("alice")),
                             DataOwner("owner_tm", "tm", keys["owner_tm"],
                                       local.clients("owner_tm")))


async def test_a_commit_in_doubt_resolves_from_the_peers_after_the_stale_timeout(
        deployment: Deployment) -> None:
    plain, version_id = _table(3), uuid.uuid4()
    with pytest.raises(CoordinationError, match=rf"upload {version_id} is in doubt: committed "
                                                r"except on \['node-2'\] \(node-2: POST "
                                                r"failed: .*\); retry the commit"):
        await deployment.upload(plain.copy(), deployment.kill_at("POST", "/commit"), version_id)
    assert (await deployment.states(version_id))[:2] == ["committed", "committed"]

    await deployment.restart_after_the_stale_timeout()
    entry = await deployment.recovered(version_id, "upload.commit")
    assert entry["actor"] == "node:recovery"
    assert '"peers":{"node-0":"committed","node-1":"committed"}' in entry["details"]
    assert await deployment.states(version_id) == ["committed"] * 3
    assert await deployment.blobs(version_id) == [len(MANIFEST["columns"])] * 3  # not erased
    assert await deployment.in_doubt_gauge(DOUBTING) == "dic_uploads_in_doubt 0.0"

    # no new upload: the version node-2 kept is what all three compute on
    study = await deployment.alice.create_study("Recovered upload", at=DOUBTING)
    request_id = await deployment.alice.submit(study, "mean", [dataset_uuid("tm", "pilot")],
                                               {"column": "age"}, at=DOUBTING)
    await deployment.owner.approve(request_id, at=0)
    states = await deployment.alice.wait(request_id, until={"completed", "failed"})
    assert [s.status for s in states] == ["completed"] * 3, states
    results = [(await deployment.alice.result(request_id, nodes=(i,))).aggregates
               for i in range(3)]
    assert results[0] == results[1] == results[2]
    assert results[0]["n"] == ROWS
    assert results[0]["sum"] == str(int(plain[:, 0].sum()))


async def test_an_abort_in_doubt_erases_the_version_after_the_grace_period(
        deployment: Deployment) -> None:
    version_id = uuid.uuid4()
    kill = deployment.kill_at("DELETE", str(version_id))

    async def vote_no_at_node_1_then_kill(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 1 and request.url.path.endswith("/columns/weight"):  # lost on the way
            request.url = request.url.with_path(request.url.path.replace("/weight", "/age"))
        await kill(node, request)

    with pytest.raises(UploadError, match=r"node-1: POST /v1/uploads/.*/prepare answered 409"):
        await deployment.upload(_table(4), vote_no_at_node_1_then_kill, version_id)
    assert (await deployment.states(version_id))[:2] == ["deleted", "deleted"]
    assert deployment.killed_at  # node-2 had voted ready and was killed before the abort

    await deployment.restart_after_the_stale_timeout()
    entry = await deployment.recovered(version_id, "upload.abort")
    assert entry["actor"] == "node:recovery"
    assert '"peers":{"node-0":"deleted","node-1":"deleted"}' in entry["details"]
    assert await deployment.states(version_id) == ["deleted"] * 3
    assert await deployment.blobs(version_id) == [0, 0, 0]
    [key] = await deployment.fetch(DOUBTING, "SELECT key_id, wrapped_key FROM "
                                   "dataset_versions WHERE id = $1", version_id)
    assert key["key_id"] is None and key["wrapped_key"] is None  # crypto-shredded
    assert await deployment.in_doubt_gauge(DOUBTING) == "dic_uploads_in_doubt 0.0"
