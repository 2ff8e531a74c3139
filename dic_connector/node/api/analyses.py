"""The analyses catalogue, as researchers and data owners read it before they sign.

``GET /v1/analyses`` lists every analysis the node runs (:mod:`dic_connector.node.analyses`):
its name and version, what it computes, **exactly what it opens and to whom**
(``discloses``), and the JSON Schema of its parameters. A data owner's client shows the
``discloses`` text of a request's analysis before the owner signs an approval; a researcher's
forms are built from the schema. Nothing here depends on data.
"""

from __future__ import annotations

from aiohttp import web

from dic_connector.node.analyses.catalog import ANALYSES
from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.schemas import array, obj
from dic_connector.vocabulary import Role

ANALYSIS = obj({"name": {"type": "string"}, "version": {"type": "string"},
                "summary": {"type": "string"}, "discloses": {"type": "string"},
                "parameters_schema": {"type": "object"}})


async def list_analyses(request: web.Request) -> web.Response:
    return web.json_response([cls().describe() for cls in ANALYSES])


ENDPOINTS = (
    Endpoint("GET", "/v1/analyses", list_analyses, "listAnalyses",
             "The analyses catalogue: what each computes, opens (to whom) and takes",
             frozenset({Role.RESEARCHER, Role.DATA_OWNER, Role.ADMIN}),
             response_schema=array(ANALYSIS)),
)
