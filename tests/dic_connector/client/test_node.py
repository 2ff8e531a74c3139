"""NodeClient against a real node app: typed answers, refusals with their status and the
node's detail (never a token), silence as status None, and a session it never closes."""

from __future__ import annotations

import datetime as dt
import uuid

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from dic_connector.client import NodeClient, Study
from dic_connector.errors import ApiError
from dic_connector.vocabulary import RequestStatus

from .conftest import Node


async def test_answers_are_typed_views(node: Node) -> None:
    alice = node.researcher()
    study = await alice.create_study("Adrenal SBRT", "pilot rerun")
    assert isinstance(study, Study) and study.created_at.tzinfo is not None
    assert [s.id for s in await alice.studies()] == [study.id]
    [dataset, _] = sorted(await alice.datasets(), key=lambda d: d.site)
    assert dataset.id == node.dataset_id and dataset.site == "tm"
    assert dataset.latest_version is not None and dataset.latest_version.row_count == 24
    request_id = await alice.submit(study, "median", [node.dataset_id], {"column": "age"})
    request = await node.client("alice").request(request_id)
    assert request.status is RequestStatus.AWAITING_APPROVAL and request.sites == ("tm",)
    assert request.datasets == (node.dataset_id,) and not request.ended
    assert request.updated_at >= request.created_at - dt.timedelta(seconds=1)


async def test_a_refusal_carries_the_status_and_the_nodes_detail(node: Node) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(ApiError) as caught:
        await node.client("alice").request(missing)
    assert caught.value.status == 404
    assert caught.value.detail == f"analysis request {missing} not found"
    assert str(caught.value) == (f"alice -> node-0 GET /v1/requests/{missing}: answered 404: "
                                 f"analysis request {missing} not found")
    with pytest.raises(ApiError) as caught:  # a researcher may not sign for a site
        await node.client("alice").approve(missing, {"payload": "{}", "signature": "AA=="})
    assert caught.value.status == 403
    assert "needs one of the roles: data_owner" in (caught.value.detail or "")


async def test_no_message_shows_the_token(node: Node) -> None:
    forged = node.tokens["alice"][:-4] + "xxxx"
    client = NodeClient(base_url=node.url, session=node.http, token=forged, principal="alice")
    with pytest.raises(ApiError) as caught:
        await client.studies()
    assert caught.value.status == 401
    assert caught.value.detail == "missing, invalid or expired credentials"
    assert forged not in str(caught.value) and forged not in repr(client)
    assert node.tokens["alice"] not in repr(node.client("alice"))


async def test_an_unreachable_node_is_status_none(node: Node, unused_tcp_port: int) -> None:
    client = NodeClient(base_url=f"http://127.0.0.1:{unused_tcp_port}", session=node.http,
                        token=node.tokens["alice"], name="node-2", principal="alice")
    with pytest.raises(ApiError) as caught:
        await client.requests()
    assert caught.value.status is None and caught.value.detail is None
    assert str(caught.value).startswith("alice -> node-2 GET /v1/requests: not reachable")
    assert node.tokens["alice"] not in str(caught.value)


async def test_an_answer_that_breaks_its_schema_is_an_api_error() -> None:
    async def study(request: web.Request) -> web.Response:
        return web.json_response({"id": "x"}, status=201)  # no title, no created_at

    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>bad gateway</html>")

    app = web.Application()
    app.router.add_post("/v1/studies", study)
    app.router.add_get("/v1/studies", broken)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            client = NodeClient(base_url=str(server.make_url("")), session=http, token="t",
                                name="node-1")
            with pytest.raises(ApiError, match="does not fit its schema") as caught:
                await client.create_study("x")
            assert caught.value.status is None
            with pytest.raises(ApiError) as caught:  # not a problem document: quoted
                await client.studies()
            assert caught.value.status == 502
            assert caught.value.detail == "<html>bad gateway</html>"
    finally:
        await server.close()


async def test_the_injected_session_stays_open(node: Node) -> None:
    client = node.client("alice")
    await client.studies()
    with pytest.raises(ApiError):
        await client.request("not-a-uuid")  # a refusal does not close it either
    del client
    assert not node.http.closed
    assert await node.client("alice").studies() == []  # the session still serves calls
