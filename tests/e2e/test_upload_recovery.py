"""Issue 16, "commit in doubt", against three real node processes (``dic node serve``,
PostgreSQL, mutual TLS): a node that voted ready on uploads and is killed (SIGKILL) before
the connector's commit or abort reaches it learns each outcome from its peers when it is
restarted, even after the stale-upload timeout (which used to erase the versions it had
voted ready on; :mod:`dic_connector.node.coordination.recovery`).

Two uploads of site tm run at once through the real
:class:`~dic_connector.connector.upload.Uploader`, over a session whose client middleware
sees each request before it leaves (:class:`KillBeforeTheOutcomes`):

- ``pilot``: all three vote ready, the connector commits; its commit for node-2 is held;
- ``pilot_b``: node-1 votes no (a column lost on the way), the connector aborts; its abort
  for node-2 is held.

Once both are held, node-2's own ``/metrics`` show two uploads in doubt, and the process is
killed: both requests meet a dead node. The connector commits ``pilot`` on node-0 and node-1
and reports it in doubt, and aborts ``pilot_b`` on both. node-2, restarted with
``stale_upload_after_s`` shorter than it was down, asks its peers: it commits ``pilot`` and
erases ``pilot_b`` (blobs and key), both audited by ``node:recovery``, its gauge returns to
0, and an analysis of ``pilot`` completes on all three nodes with the right n and sum, with
no new upload. One deployment and one restart for both cases keep the test short: starting
node processes is most of its time. Nothing inside the node processes is patched.
"""

from __future__ import annotations

import asyncio
import re
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

    async def upload(self, dataset: str, table: np.ndarray, interfere: Interfere,
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
                           session=session).upload(dataset, table, MANIFEST,
                                                   version_id=version_id)

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


class KillBeforeTheOutcomes:
    """Client middleware hook: hold each outcome request for node-2 (``("commit" or
    "abort", version id)``) until all of them are held, then kill node-2 (once its own
    ``/metrics`` show every one of those versions in doubt) and let them go on to the dead
    node."""

    def __init__(self, deployment: Deployment, outcomes: set[tuple[str, uuid.UUID]]) -> None:
        self.deployment = deployment
        self.outcomes = outcomes
        self.held: set[tuple[str, uuid.UUID]] = set()
        self.killed = asyncio.Event()

    async def __call__(self, node: int, request: aiohttp.ClientRequest) -> None:
        if node != DOUBTING or self.killed.is_set():
            return
        parts = request.url.path.split("/")  # /v1/uploads/<id>[/prepare|/commit|/columns/c]
        if request.method == "POST" and parts[-1] == "commit":
            outcome = ("commit", uuid.UUID(parts[3]))
        elif request.method == "DELETE" and len(parts) == 4:
            outcome = ("abort", uuid.UUID(parts[3]))
        else:
            return
        assert outcome in self.outcomes, outcome
        self.held.add(outcome)
        if self.held == self.outcomes:
            gauge = await self.deployment.in_doubt_gauge(DOUBTING)
            assert gauge == f"dic_uploads_in_doubt {float(len(self.outcomes))}", gauge
            self.deployment.local.kill(DOUBTING)
            self.deployment.killed_at = time.monotonic()
            self.killed.set()
        try:
            await asyncio.wait_for(self.killed.wait(), 30)
        except TimeoutError:
            raise AssertionError(f"held {self.held} of {self.outcomes} for 30 s") from None


async def test_uploads_in_doubt_resolve_from_the_peers_after_the_stale_timeout(
        deployment: Deployment) -> None:
    plain, committed, aborted = _table(3), uuid.uuid4(), uuid.uuid4()
    kill = KillBeforeTheOutcomes(deployment, {("commit", committed), ("abort", aborted)})

    async def vote_no_at_node_1(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 1 and request.url.path == f"/v1/uploads/{aborted}/columns/weight":
            request.url = request.url.with_path(request.url.path.replace("/weight", "/age"))
        await kill(node, request)

    outcomes = await asyncio.gather(
        deployment.upload("pilot", plain.copy(), kill, committed),
        deployment.upload("pilot_b", _table(4), vote_no_at_node_1, aborted),
        return_exceptions=True)
    assert isinstance(outcomes[0], CoordinationError), outcomes[0]
    assert re.fullmatch(rf"upload {committed} is in doubt: committed except on \['node-2'\] "
                        r"\(node-2: POST failed: \w+\); retry the commit when they are back",
                        str(outcomes[0])), outcomes[0]
    assert isinstance(outcomes[1], UploadError), outcomes[1]
    assert re.match(r"node-1: POST /v1/uploads/\S+/prepare answered 409: .*weight",
                    str(outcomes[1])), outcomes[1]
    assert (await deployment.states(committed))[:2] == ["committed", "committed"]
    assert (await deployment.states(aborted))[:2] == ["deleted", "deleted"]

    await deployment.restart_after_the_stale_timeout()
    entry = await deployment.recovered(committed, "upload.commit")
    assert entry["actor"] == "node:recovery"
    assert '"peers":{"node-0":"committed","node-1":"committed"}' in entry["details"]
    entry = await deployment.recovered(aborted, "upload.abort")
    assert entry["actor"] == "node:recovery"
    assert '"peers":{"node-0":"deleted","node-1":"deleted"}' in entry["details"]
    assert await deployment.states(committed) == ["committed"] * 3
    assert await deployment.blobs(committed) == [len(MANIFEST["columns"])] * 3  # not erased
    assert await deployment.states(aborted) == ["deleted"] * 3
    assert await deployment.blobs(aborted) == [0, 0, 0]
    [key] = await deployment.fetch(DOUBTING, "SELECT key_id, wrapped_key FROM "
                                   "dataset_versions WHERE id = $1", aborted)
    assert key["key_id"] is None and key["wrapped_key"] is None  # crypto-shredded
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
