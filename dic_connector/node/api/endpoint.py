"""Endpoint declarations: one table drives routing, authorisation and the OpenAPI document.

Every route of the app comes from an :class:`Endpoint`. An endpoint either names the roles
allowed to call it or is explicitly :data:`PUBLIC`; the app refuses to start with a route
that has no declaration (fail closed), and a test enumerates the routes to prove that only
health and metrics are public.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import jsonschema
from aiohttp import web

from dic_connector.vocabulary import Role

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Schema = dict[str, Any]

#: Marker for endpoints anyone may call (liveness, readiness, metrics, the API document).
PUBLIC: frozenset[Role] = frozenset()


def compiled(schema: Schema) -> Any:
    """A validator of ``schema`` (JSON Schema 2020-12, formats checked) to keep: building
    one per body was part of every call's cost (:attr:`Endpoint.request_validator` keeps
    one per endpoint)."""
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


@dataclass(frozen=True)
class Endpoint:
    """One operation: ``method path``, who may call it, and the shapes of its bodies."""

    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    #: Roles allowed; :data:`PUBLIC` for unauthenticated endpoints.
    roles: frozenset[Role]
    #: JSON Schema of the request body (validated before the handler runs).
    request_schema: Schema | None = None
    #: JSON Schema of the success response body.
    response_schema: Schema | None = None
    #: Status code of a successful response.
    status: int = 200
    #: Media type of the success response (JSON unless stated).
    media_type: str = "application/json"
    #: Tag grouping the operation in the document.
    tag: str = "control"
    #: Path parameters that are UUIDs (validated before the handler runs).
    uuid_params: tuple[str, ...] = ()
    #: Called by a site's connector, authenticated by its TLS client certificate (no roles).
    connector: bool = False
    #: Called by a peer compute node, authenticated by its TLS client certificate (no roles).
    peer: bool = False
    #: Raw (non-JSON) request body media type, e.g. share bytes; the handler reads the body
    #: itself, with a limit (:mod:`~dic_connector.node.api.bodies`).
    body_media_type: str | None = None
    #: Query and header parameters beyond the path's (OpenAPI parameter objects); the
    #: handler reads them, and answers 400 for one it cannot use.
    parameters: tuple[dict[str, Any], ...] = field(default=(), hash=False)
    #: Answers carry an ``ETag``, and ``304 Not Modified`` when ``If-None-Match`` names it.
    conditional: bool = False

    @cached_property
    def request_validator(self) -> Any:
        """The validator of :attr:`request_schema`, built once (None: no schema)."""
        return None if self.request_schema is None else compiled(self.request_schema)

    @property
    def is_public(self) -> bool:
        return self.roles == PUBLIC and not self.connector and not self.peer

    @property
    def by_certificate(self) -> bool:
        """Authenticated by a TLS client certificate (connector or peer node), not a token."""
        return self.connector or self.peer
