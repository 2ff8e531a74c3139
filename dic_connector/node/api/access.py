"""The access log: one line per request on the ``dic_connector.node.access`` logger (INFO).

Each line names the method, the route *template* (``/v1/requests/{request_id}``, never the
concrete path, whose identifiers and query string are the caller's), the status, who called
(a principal id, the certificate name of a connector or peer node, or ``-`` before
authentication) and how long the node took. Never a body, a header, a token or a query
value: those are the caller's secrets or could carry row-level data. The fields are also on
the record (``extra``) for structured handlers. aiohttp's own access log, which prints the
request line with its query string, is switched off where the node is served
(``dic node serve``).

A request the client abandoned is logged with status 499 (the client closed it), as nginx
does.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from dic_connector.node.api.endpoint import Handler
from dic_connector.node.api.keys import PRINCIPAL

ACCESS_LOGGER = "dic_connector.node.access"
#: Status logged for a request whose client went away before the answer.
CLIENT_CLOSED = 499


def route_template(request: web.Request) -> str:
    """The matched route's template, or ``unmatched`` (the router's own 404/405)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def access_log_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        duration_ms = (time.perf_counter() - started) * 1000.0
        principal = request.get(PRINCIPAL, "-")
        route = route_template(request)
        logging.getLogger(ACCESS_LOGGER).info(
            "%s %s %d %s %.1fms",
            request.method,
            route,
            status,
            principal,
            duration_ms,
            extra={
                "method": request.method,
                "route": route,
                "status": status,
                "principal": principal,
                "duration_ms": round(duration_ms, 3),
            },
        )
