"""A request's status on all three nodes, from one node: ``GET /v1/requests/{id}/nodes``.

Each node keeps its own status of a request (DESIGN.md: each verifies and decides for
itself), and each issues its own tokens, so a person's page on one node cannot ask the other
two itself (they are other origins; the API has no CORS). This node asks them instead, over
the peer API's mutual TLS (``GET /v1/peer/requests/{id}``, :mod:`.peer`), after checking
that the caller may see the request here, and reports what each answered: a status word and
its reason, never more. What a peer says is informational only: nothing is decided on it.
A peer that does not know the request yet (replication is under way) shows ``status`` null
with that reason; one that does not answer in time shows ``reachable`` false.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from dic_connector.errors import PeerRefused, PeerUnavailable
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, PEER_STATUS, STORE, identity
from dic_connector.node.api.requests import READERS, path_uuid, visible_request
from dic_connector.node.api.schemas import array, obj
from dic_connector.node.coordination.peers import PeerClient

#: How long a peer may take to say a status before it shows as unreachable.
PEER_STATUS_TIMEOUT_S = 3.0

NODE_STATUS = obj(
    {
        "node": {"type": "string"},
        "status": {"type": ["string", "null"]},
        "status_reason": {"type": ["string", "null"]},
        "reachable": {"type": "boolean"},
    }
)


async def _ask(client: PeerClient, peer: int, path: str) -> dict[str, Any]:
    name = client.name(peer)
    try:
        answer = await client.call(peer, "GET", path)
    except PeerRefused:
        return {"node": name, "status": None, "status_reason": "not there yet", "reachable": True}
    except PeerUnavailable:
        return {"node": name, "status": None, "status_reason": "unreachable", "reachable": False}
    status, reason = answer.get("status"), answer.get("status_reason")
    return {
        "node": name,
        "status": status if isinstance(status, str) else None,
        "status_reason": reason if isinstance(reason, str) else None,
        "reachable": True,
    }


async def peer_status_client(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: one peer client for the status reads while the app runs (a client
    per call would open a session and TLS handshakes to both peers on every poll of the
    web page); none for a node without peers or TLS."""
    config = app[CONFIG]
    if not config.coordinated or config.tls is None:
        yield
        return
    async with PeerClient(config, PEER_STATUS_TIMEOUT_S) as client:
        app[PEER_STATUS] = client
        yield


async def request_on_nodes(request: web.Request) -> web.Response:
    config, request_id = request.app[CONFIG], path_uuid(request, "request_id")
    async with request.app[STORE].reading() as uow:
        req = await visible_request(uow, identity(request), request_id)
        views = [
            {
                "node": config.node_id,
                "status": req.status.value,
                "status_reason": req.status_reason,
                "reachable": True,
            }
        ]
    client = request.app.get(PEER_STATUS)
    if client is not None:
        views += await asyncio.gather(
            *(_ask(client, peer, f"/v1/peer/requests/{request_id}") for peer in client.others)
        )
    return web.json_response(sorted(views, key=lambda view: str(view["node"])))


ENDPOINTS = (
    Endpoint(
        "GET",
        "/v1/requests/{request_id}/nodes",
        request_on_nodes,
        "getRequestOnNodes",
        "The request's status on each of the three nodes, as each reports it",
        READERS,
        response_schema=array(NODE_STATUS),
        uuid_params=("request_id",),
    ),
)
