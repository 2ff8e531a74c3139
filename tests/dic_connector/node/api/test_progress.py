"""``GET /v1/requests/{id}/nodes``: the request's status on each node, for those who may see
it; a peer that does not know it yet or does not answer says so instead of failing."""

from __future__ import annotations

from typing import Any, cast

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.api.progress import _ask
from dic_connector.node.coordination.peers import PeerClient

from .conftest import Node


async def test_a_standalone_node_reports_its_own_status_to_those_who_see_the_request(
    node: Node,
) -> None:
    study = (
        await (
            await node.client.post("/v1/studies", json={"title": "S"}, headers=node.auth("alice"))
        ).json()
    )["id"]
    submitted = await node.client.post(
        f"/v1/studies/{study}/requests", headers=node.auth("alice"), json=node.request_body(study)
    )
    request_id = (await submitted.json())["id"]
    path = f"/v1/requests/{request_id}/nodes"
    for who in ("alice", "owner_tm", "admin"):
        response = await node.client.get(path, headers=node.auth(who))
        assert response.status == 200, who
        assert await response.json() == [
            {
                "node": "node-0",
                "status": "awaiting_approval",
                "status_reason": "waiting for site(s) tm",
                "reachable": True,
            }
        ]
    for who in ("mallory", "owner_tr"):  # another researcher's, another site's
        assert (await node.client.get(path, headers=node.auth(who))).status == 404, who


class _Peers:
    """Answers as three kinds of peer would: one knows the request, one has not received it
    yet (404), one is down."""

    def name(self, peer: int) -> str:
        return f"node-{peer}"

    async def call(self, peer: int, method: str, path: str) -> dict[str, Any]:
        assert (method, path) == ("GET", "/v1/peer/requests/x")
        if peer == 0:
            return {"id": "x", "status": "running", "status_reason": None}
        if peer == 1:
            raise PeerRefused("node-1 refused GET: 404 not found", 404)
        raise PeerUnavailable("node-2 unreachable (ClientConnectorError)")


async def test_each_peer_answer_becomes_a_status_line() -> None:
    peers = cast(PeerClient, _Peers())
    answers = [await _ask(peers, i, "/v1/peer/requests/x") for i in range(3)]
    assert answers == [
        {"node": "node-0", "status": "running", "status_reason": None, "reachable": True},
        {"node": "node-1", "status": None, "status_reason": "not there yet", "reachable": True},
        {"node": "node-2", "status": None, "status_reason": "unreachable", "reachable": False},
    ]
