"""Uploads in doubt (issue 16, "commit in doubt"): a node that voted ready on a version and
never received the connector's commit or abort asks its peers for the outcome. Committed on
a peer -> committed here (and an analysis uses it); deleted or absent on both peers, or on
one with the other in doubt too (the connector died during the vote), after the grace period
-> aborted here; a peer unreachable, or both in doubt -> still prepared, nothing erased. The
same with real node processes: ``tests/e2e/test_upload_recovery.py``."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import uuid
from collections.abc import Callable

import aiohttp
import pytest

from dic_connector import __version__
from dic_connector.connector.upload import NodeEndpoint, Uploader
from dic_connector.errors import CoordinationError, UploadError
from dic_connector.node.api.app import all_endpoints
from dic_connector.node.api.openapi import build_document
from dic_connector.node.coordination.peers import PeerClient
from dic_connector.node.coordination.recovery import ABSENT, Outcome, decide, resolve
from dic_connector.node.store.enums import VersionState
from dic_connector.trust.dataset_ids import dataset_uuid

from .conftest import MANIFEST, Cluster, cohort

DATASET = "pilot"
HOUR = dt.timedelta(hours=1)
Interfere = Callable[[int, aiohttp.ClientRequest], None]


async def _upload(
    cluster: Cluster,
    interfere: Interfere,
    fails_with: tuple[type[Exception], ...] = (CoordinationError, UploadError),
) -> uuid.UUID:
    """tm's upload of 24 rows through a session whose requests ``interfere`` sees first;
    the version id (the upload itself is expected to fail with ``fails_with``)."""
    ports = {c.listen_port: c.node_index for c in cluster.configs}

    async def middleware(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        interfere(ports[request.url.port or 443], request)
        return await handler(request)

    endpoints = [
        NodeEndpoint(c.peers[c.node_index].api_url, f"node-{c.node_index}") for c in cluster.configs
    ]
    version_id = uuid.uuid4()
    async with aiohttp.ClientSession(middlewares=(middleware,)) as session:
        uploader = Uploader(
            endpoints,
            cluster.deployment.pki["connector.tm"],
            "tm",
            timeout_s=20,
            commit_retries=2,
            retry_delay_s=0.05,
            session=session,
        )
        with pytest.raises(fails_with):
            await uploader.upload(DATASET, cohort(24, seed=7), MANIFEST, version_id=version_id)
    return version_id


async def _states(cluster: Cluster, version_id: uuid.UUID) -> list[VersionState]:
    states = []
    for store in cluster.stores:
        async with store.reading() as uow:
            states.append((await uow.versions.get(version_id)).state)
    return states


async def _aborted_except_on_node_2(cluster: Cluster) -> uuid.UUID:
    """Node 1 votes no (a column lost on the way), the connector aborts, and its abort never
    reaches node 2, which had voted ready."""

    def interfere(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 1 and request.url.path.endswith("/columns/ecog"):
            request.url = request.url.with_path(request.url.path.replace("/ecog", "/age"))
        if node == 2 and request.method == "DELETE":
            raise aiohttp.ClientConnectionError("node-2 is down (injected)")

    version_id = await _upload(cluster, interfere)
    assert await _states(cluster, version_id) == [
        VersionState.DELETED,
        VersionState.DELETED,
        VersionState.PREPARED,
    ]
    return version_id


@pytest.mark.parametrize(
    ("peers", "age", "outcome"),
    [
        ({"node-0": "committed", "node-1": None}, 0 * HOUR, Outcome.COMMIT),
        ({"node-0": "deleted", "node-1": "committed"}, 0 * HOUR, Outcome.COMMIT),
        ({"node-0": "deleted", "node-1": ABSENT}, 2 * HOUR, Outcome.ABORT),
        ({"node-0": "deleted", "node-1": ABSENT}, 0 * HOUR, Outcome.WAIT),  # within the grace
        ({"node-0": "deleted", "node-1": None}, 2 * HOUR, Outcome.WAIT),  # node-1 did not answer
        # node-0 in doubt too, node-1 gone: nobody committed (the connector died in the vote)
        ({"node-0": "prepared", "node-1": "deleted"}, 2 * HOUR, Outcome.ABORT),
        ({"node-0": "prepared", "node-1": ABSENT}, 2 * HOUR, Outcome.ABORT),
        ({"node-0": "prepared", "node-1": "deleted"}, 0 * HOUR, Outcome.WAIT),
        ({"node-0": "prepared", "node-1": None}, 2 * HOUR, Outcome.WAIT),
        # every node voted ready: only the connector knows whether it committed
        ({"node-0": "prepared", "node-1": "prepared"}, 2 * HOUR, Outcome.WAIT),
        ({"node-0": "receiving", "node-1": "deleted"}, 2 * HOUR, Outcome.WAIT),
        ({}, 2 * HOUR, Outcome.WAIT),
    ],
)
def test_decide(peers: dict[str, str | None], age: dt.timedelta, outcome: Outcome) -> None:
    now = dt.datetime(2026, 12, 3, 12, tzinfo=dt.UTC)
    assert decide(peers, now - age, HOUR, now) is outcome


async def test_committed_on_the_peers_commits_here_on_restart_and_an_analysis_uses_it(
    cluster: Cluster,
) -> None:
    """Node 2 voted ready and was down for the commit: the connector reports the upload in
    doubt. Restarted, node 2 asks its peers on startup, learns it was committed, commits
    (audited by node:recovery), and a count over the version runs on all three nodes."""

    def down_at_commit(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 2 and request.url.path.endswith("/commit"):
            raise aiohttp.ClientConnectionError("node-2 is down (injected)")

    version_id = await _upload(cluster, down_at_commit)
    assert await _states(cluster, version_id) == [
        VersionState.COMMITTED,
        VersionState.COMMITTED,
        VersionState.PREPARED,
    ]
    await cluster.stop_node(2)
    await cluster.start_node(2)  # its cleanup loop's first sweep asks the peers
    for _ in range(250):
        if (await _states(cluster, version_id))[2] is VersionState.COMMITTED:
            break
        await asyncio.sleep(0.02)
    assert await _states(cluster, version_id) == [VersionState.COMMITTED] * 3
    async with cluster.stores[2].reading() as uow:
        entry = await uow.audit.latest("upload.commit", f"version:{version_id}")
        assert entry is not None and entry.actor == "node:recovery"
        assert json.loads(entry.details)["peers"] == {"node-0": "committed", "node-1": "committed"}

    cluster.datasets["tm"] = dataset_uuid("tm", DATASET)
    request_id = await cluster.approved_count(submitted_at=2, approved_at=0)
    results = await cluster.completed_everywhere(request_id)
    assert [r["n"] for r in results] == [24, 24, 24]


async def test_aborted_on_every_peer_aborts_here_after_the_grace_period(cluster: Cluster) -> None:
    version_id = await _aborted_except_on_node_2(cluster)
    store, now = cluster.stores[2], dt.datetime.now(dt.UTC)
    async with PeerClient(cluster.configs[2]) as client:
        [waiting] = await resolve(store, client, HOUR, now)  # the connector may be committing
        assert waiting.outcome is Outcome.WAIT
        assert waiting.peers == {"node-0": "deleted", "node-1": "deleted"}
        [aborted] = await resolve(store, client, HOUR, now + 2 * HOUR)
        assert (aborted.version_id, aborted.outcome) == (version_id, Outcome.ABORT)
        assert await resolve(store, client, HOUR, now + 2 * HOUR) == []  # nothing in doubt
    async with store.reading() as uow:
        version = await uow.versions.get(version_id)
        assert version.state is VersionState.DELETED and version.wrapped_key is None
        assert await uow.versions.stored_columns(version_id) == []
        entry = await uow.audit.latest("upload.abort", f"version:{version_id}")
        assert entry is not None and entry.actor == "node:recovery"


class ConnectorDied(Exception):
    """The connector process ends here: no later request, no abort."""


async def test_a_connector_dead_during_the_vote_is_aborted_by_both_nodes_that_voted(
    cluster: Cluster,
) -> None:
    """Nodes 0 and 2 vote ready; the connector dies before node 1's vote, so no node hears
    an outcome. Node 1 erases its receiving version when it is stale; then nodes 0 and 2,
    each in doubt and each seeing the other in doubt, learn from node 1 that nobody can have
    committed, and abort (they used to wait forever)."""

    def dies_before_node_1_votes(node: int, request: aiohttp.ClientRequest) -> None:
        if node == 1 and request.url.path.endswith("/prepare"):
            raise ConnectorDied

    version_id = await _upload(cluster, dies_before_node_1_votes, (ConnectorDied,))
    assert await _states(cluster, version_id) == [
        VersionState.PREPARED,
        VersionState.RECEIVING,
        VersionState.PREPARED,
    ]
    later = dt.datetime.now(dt.UTC) + 2 * HOUR
    clients = {i: PeerClient(cluster.configs[i]) for i in (0, 2)}
    async with clients[0], clients[2]:
        for i in (0, 2):  # node 1 has not voted and may still: wait
            [waiting] = await resolve(cluster.stores[i], clients[i], HOUR, later)
            assert waiting.outcome is Outcome.WAIT
        async with cluster.stores[1].unit_of_work() as uow:
            assert await uow.versions.cleanup_stale_receiving(HOUR, later) == [version_id]
        [at_0] = await resolve(cluster.stores[0], clients[0], HOUR, later)
        assert at_0.peers == {"node-1": "deleted", "node-2": "prepared"}
        [at_2] = await resolve(cluster.stores[2], clients[2], HOUR, later)
        assert at_2.peers == {"node-0": "deleted", "node-1": "deleted"}  # node 0 aborted
    assert (at_0.outcome, at_2.outcome) == (Outcome.ABORT, Outcome.ABORT)
    assert await _states(cluster, version_id) == [VersionState.DELETED] * 3
    for i in (0, 2):
        async with cluster.stores[i].reading() as uow:
            assert await uow.versions.stored_columns(version_id) == []
            entry = await uow.audit.latest("upload.abort", f"version:{version_id}")
            assert entry is not None and entry.actor == "node:recovery"


async def test_a_peer_unreachable_keeps_the_version_prepared_and_nothing_erased(
    cluster: Cluster,
) -> None:
    version_id = await _aborted_except_on_node_2(cluster)
    await cluster.stop_node(1)
    store = cluster.stores[2]
    async with PeerClient(cluster.configs[2], timeout_s=5) as client:
        [waiting] = await resolve(store, client, HOUR, dt.datetime.now(dt.UTC) + 2 * HOUR)
    assert waiting.outcome is Outcome.WAIT
    assert waiting.peers == {"node-0": "deleted", "node-1": None}
    async with store.reading() as uow:
        assert (await uow.versions.get(version_id)).state is VersionState.PREPARED
        assert await uow.versions.stored_columns(version_id) == sorted(
            c["name"] for c in MANIFEST["columns"]
        )
    async with cluster.http.get(  # what an operator sees
        f"{cluster.configs[2].peers[2].api_url}/metrics",
        ssl=cluster.deployment.ca_context,
        server_hostname="node-2",
    ) as response:
        assert re.search(r"^dic_uploads_in_doubt 1\.0$", await response.text(), re.MULTILINE)


async def test_the_peer_route_answers_a_version_state_or_absent(cluster: Cluster) -> None:
    version_id = await _aborted_except_on_node_2(cluster)
    async with PeerClient(cluster.configs[0]) as client:
        assert await client.call(2, "GET", f"/v1/peer/versions/{version_id}") == {
            "version_id": str(version_id),
            "state": "prepared",
        }
        unknown = uuid.uuid4()
        assert await client.call(1, "GET", f"/v1/peer/versions/{unknown}") == {
            "version_id": str(unknown),
            "state": ABSENT,
        }
    operation = build_document(all_endpoints(), __version__)["paths"][
        "/v1/peer/versions/{version_id}"
    ]["get"]
    assert operation["operationId"] == "peerVersionState"
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]["state"]["enum"]) == {
        "absent",
        "receiving",
        "prepared",
        "committed",
        "deleted",
    }
