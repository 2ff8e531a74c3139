"""Issue 16, "commit in doubt", against three real node processes (``dic node serve``,
PostgreSQL, mutual TLS): a node that voted ready on uploads and is killed (SIGKILL) before
the connector's commit or abort reaches it learns each outcome from its peers when it is
restarted after the stale-upload timeout (whose cleanup used to erase the versions it had
voted ready on; :mod:`dic_connector.node.coordination.recovery`).

Site tm uploads through the real :class:`~dic_connector.connector.upload.Uploader`, over a
session whose client middleware sees each request before it leaves:

- ``pilot_c``: node-0 and node-2 vote ready and the connector dies before node-1's vote
  (no outcome is ever sent); node-1 erases its ``receiving`` version once it is stale;
- then, at once, ``pilot``: all three vote ready and the connector commits, its commit for
  node-2 held; and ``pilot_b``: node-1 votes no (a column lost on the way), the connector
  aborts, its abort for node-2 held (:class:`KillBeforeTheOutcomes`).

Once both are held, node-2's own ``/metrics`` show the uploads in doubt and the process is
killed: both requests meet a dead node. The connector commits ``pilot`` on node-0 and node-1
and reports it in doubt naming node-2, and aborts ``pilot_b`` on both. node-2, restarted
when it has been down longer than ``stale_upload_after_s``, asks its peers: it commits
``pilot`` and erases ``pilot_b`` and, with node-0, ``pilot_c`` (blobs and key), each audited
by ``node:recovery``; its gauge returns to 0, and an analysis of ``pilot`` completes on all
three nodes with the right n and sum, with no new upload. One deployment and one restart for
the three cases keep the test short: starting node processes is most of its time. Nothing
inside the node processes is patched.
"""

from __future__ import annotations

import asyncio
import json
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
#: every node's stale-upload timeout, also the recovery's grace period: short, so that node-2
#: is down for longer; and long enough for an upload's begin, columns and vote
STALE_S = 4
ROWS = 30
Interfere = Callable[[int, aiohttp.ClientRequest], Awaitable[None]]


@dataclass
class Deployment:
    """The three node processes, their databases (read directly, as an operator would, to
    see states, blobs, keys and audit entries), and the people calling them."""

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
        """node-2 back once it has been down for longer than ``stale_upload_after_s``."""
        assert self.killed_at, "node-2 was never killed"
        down_s = time.monotonic() - self.killed_at
        if down_s <= STALE_S + 0.2:
            await asyncio.sleep(STALE_S + 0.2 - down_s)
        self.local.start_node(DOUBTING, self.logs)
        await self.local.wait_ready(indices=[DOUBTING])

    async def recovered(self, version_id: uuid.UUID, action: str, node: int = DOUBTING,
                        timeout_s: float = 10.0) -> dict[str, str | None]:
        """The peers' answers in the node's audit entry of ``action`` on the version,
        which must be by ``node:recovery``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rows = await self.fetch(node, "SELECT actor, details FROM audit_log WHERE "
                                    "action = $1 AND object = $2", action,
                                    f"version:{version_id}")
            if rows:
                [entry] = rows
                assert entry["actor"] == "node:recovery", entry
                peers: dict[str, str | None] = json.loads(entry["details"])["peers"]
                return peers
            await asyncio.sleep(0.1)
        raise AssertionError(f"node-{node} audited no {action} of {version_id} within "
                             f"{timeout_s} s; its log ends:\n{self.local.nodes[node].tail()}")


def _table(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(38, 92, ROWS),
                            rng.integers(45, 120, ROWS)]).astype(np.int64)


@pytest.fixture
async def deployment(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[Deployment]:
    dsns = [await create_database(postgres_dsn, "e2e") for _ in range(3)]
    files = write_local_deployment(tmp_path, sites=("tm",), database_urls=dsns, extra={
        "coordination_interval_s": 0.2, "mpc_timeout_s": 10, "stale_upload_after_s": STALE_S,
        "cleanup_interval_s": 1})
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
            assert float(gauge.split()[1]) >= len(self.outcomes), gauge
            self.deployment.local.kill(DOUBTING)
            self.deployment.killed_at = time.monotonic()
            self.killed.set()
        try:
            await asyncio.wait_for(self.killed.wait(), 30)
        except TimeoutError:
            raise AssertionError(f"held {self.held} of {self.outcomes} for 30 s") from None


class ConnectorDied(Exception):
    """The connector process ends here: no later request, no abort."""


async def test_uploads_in_doubt_resolve_from_the_peers_after_the_stale_timeout(
        deployment: Deployment) -> None:
    plain, committed, aborted, died = _table(3), uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def dies_before_node_1_votes(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 1 and request.url.path == f"/v1/uploads/{died}/prepare":
            raise ConnectorDied

    with pytest.raises(ConnectorDied):
        await deployment.upload("pilot_c", _table(5), dies_before_node_1_votes, died)
    assert await deployment.states(died) == ["prepared", "receiving", "prepared"]

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
    assert await deployment.recovered(committed, "upload.commit") == {
        "node-0": "committed", "node-1": "committed"}
    assert await deployment.recovered(aborted, "upload.abort") == {
        "node-0": "deleted", "node-1": "deleted"}
    # pilot_c: node-1 expired it (never voted); whichever of node-0 and node-2 aborted first
    # saw the other still in doubt, and aborted all the same
    at_0 = await deployment.recovered(died, "upload.abort", node=0)
    at_2 = await deployment.recovered(died, "upload.abort")
    assert at_0["node-1"] == at_2["node-1"] == "deleted"
    assert "prepared" in (at_0["node-2"], at_2["node-0"]), (at_0, at_2)
    assert len(await deployment.fetch(1, "SELECT 1 FROM audit_log WHERE action = "
                                      "'upload.expire' AND object = $1", f"version:{died}")) == 1

    assert await deployment.states(committed) == ["committed"] * 3
    assert await deployment.blobs(committed) == [len(MANIFEST["columns"])] * 3  # not erased
    for version_id in (aborted, died):
        assert await deployment.states(version_id) == ["deleted"] * 3
        assert await deployment.blobs(version_id) == [0, 0, 0]
        for node in range(3):
            [key] = await deployment.fetch(node, "SELECT key_id, wrapped_key FROM "
                                           "dataset_versions WHERE id = $1", version_id)
            assert key["key_id"] is None and key["wrapped_key"] is None  # crypto-shredded
    assert await deployment.in_doubt_gauge(DOUBTING) == "dic_uploads_in_doubt 0.0"
    assert await deployment.in_doubt_gauge(0) == "dic_uploads_in_doubt 0.0"

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
