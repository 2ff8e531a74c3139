"""A researcher signs what the node verifies, resubmits idempotently, and uses a result
only when every node holds the same aggregates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.client import NodeClient, Researcher, researcher
from dic_connector.client.views import AnalysisInfo
from dic_connector.errors import ApiError, ClientError, ResultMismatch

from .conftest import Node

REQUEST_ID = "4b1d0f5e-8a55-4c1b-9f0e-0f8e2b6a7c11"


async def test_submission_is_signed_and_idempotent(node: Node) -> None:
    alice = node.researcher()
    study = await alice.create_study("x")
    first = await alice.submit(study, "median", [node.dataset_id], {"column": "age"})
    again = await alice.submit(study.id, "median", [node.dataset_id], {"column": "age"},
                               request_id=first)
    assert again == first and len(await alice.requests()) == 1
    impostor = Researcher("alice", Ed25519PrivateKey.generate(), alice.nodes)
    with pytest.raises(ApiError) as caught:
        await impostor.submit(study, "count", [node.dataset_id])
    assert caught.value.status == 403 and "does not verify" in (caught.value.detail or "")


async def test_the_version_defaults_to_the_newest_in_the_catalogue(node: Node) -> None:
    """count v1 counts rows where a column is present, v2 where a boolean is true: a
    researcher who names no version gets v2, as the catalogue's newest."""
    alice = node.researcher()
    study = await alice.create_study("x")
    assert await alice.newest_version("count") == "2"
    request_id = await alice.submit(study, "count", [node.dataset_id])
    [submitted] = [r for r in await alice.requests() if r.id == request_id]
    assert (submitted.analysis, submitted.analysis_version) == ("count", "2")
    pinned = await alice.submit(study, "count", [node.dataset_id], analysis_version="1")
    [old] = [r for r in await alice.requests() if r.id == pinned]
    assert old.analysis_version == "1"
    with pytest.raises(ClientError, match=r"no analysis 'nosuch'.*it offers: .*count"):
        await alice.submit(study, "nosuch", [node.dataset_id])


@pytest.fixture
async def three_nodes() -> AsyncIterator[tuple[Researcher, dict[str, dict[str, int]]]]:
    """Three "nodes" behind one tiny app (``/node-<i>/...``) serving the result each is
    told to hold, and a researcher calling them."""
    held = {"node-0": {"n": 48}, "node-1": {"n": 48}, "node-2": {"n": 48}}

    async def result(request: web.Request) -> web.Response:
        return web.json_response({"request_id": request.match_info["id"],
                                  "aggregates": held[request.match_info["node"]],
                                  "created_at": "2024-05-01T12:00:00Z"})

    app = web.Application()
    app.router.add_get("/{node}/v1/requests/{id}/result", result)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            clients = [NodeClient(base_url=str(server.make_url(f"/{name}")), session=http,
                                  token="t", name=name, principal="alice") for name in held]
            yield Researcher("alice", Ed25519PrivateKey.generate(), clients), held
    finally:
        await server.close()


async def test_a_result_is_used_only_when_all_nodes_agree(
        three_nodes: tuple[Researcher, dict[str, dict[str, int]]]) -> None:
    alice, held = three_nodes
    assert (await alice.result(REQUEST_ID)).aggregates == {"n": 48}
    held["node-2"] = {"n": 47}
    with pytest.raises(ResultMismatch, match="node-2 hold\\(s\\) another result than node-0"):
        await alice.result(REQUEST_ID)
    assert (await alice.result(REQUEST_ID, nodes=(0, 1))).aggregates == {"n": 48}


async def test_submissions_read_the_catalogue_once_while_it_is_fresh(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = node.researcher()
    reads: list[str] = []
    real = NodeClient.analyses

    async def counted(client: NodeClient) -> list[AnalysisInfo]:
        reads.append(client.node)
        return await real(client)

    monkeypatch.setattr(NodeClient, "analyses", counted)
    study = await alice.create_study("x")
    for _ in range(3):
        await alice.submit(study, "count", [node.dataset_id])
    assert reads == ["node-0"]
    monkeypatch.setattr(researcher, "CATALOGUE_TTL_S", -1.0)  # stale at once
    await alice.submit(study, "count", [node.dataset_id])
    assert reads == ["node-0", "node-0"]
