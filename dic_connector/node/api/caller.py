"""Who the caller is to this node, and where the three nodes are: ``GET /v1/me``.

The web page (:mod:`~dic_connector.node.api.ui`) needs the caller's principal name and site
to build what they sign (a researcher's request names the researcher, an owner's approval
the site; :mod:`dic_connector.trust.payloads`), and the three nodes' public API URLs
(``peers[].api_url`` of the node config) to point at their pages. Nothing here depends on
data: the answer is the caller's own registration and this node's configuration.
"""

from __future__ import annotations

from aiohttp import web

from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.keys import CONFIG, identity
from dic_connector.node.api.schemas import NAME, array, obj
from dic_connector.vocabulary import Role

CALLER = obj(
    {
        "name": NAME,
        "role": {"type": "string", "enum": [r.value for r in Role]},
        "site": {"type": ["string", "null"]},
        "node": {"type": "string"},
        "nodes": array(obj({"name": {"type": "string"}, "api_url": {"type": "string"}})),
    }
)


async def whoami(request: web.Request) -> web.Response:
    who, config = identity(request), request.app[CONFIG]
    return web.json_response(
        {
            "name": who.name,
            "role": who.role.value,
            "site": who.site_id,
            "node": config.node_id,
            "nodes": [{"name": peer.name, "api_url": peer.api_url} for peer in config.peers],
        }
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        "/v1/me",
        whoami,
        "whoami",
        "The caller's name, role and site, and the three nodes' API URLs",
        frozenset({Role.RESEARCHER, Role.DATA_OWNER, Role.ADMIN}),
        response_schema=CALLER,
    ),
)
