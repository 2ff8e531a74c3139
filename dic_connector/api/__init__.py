"""The node's control-flow HTTP API (aiohttp), served by :func:`create_app`.

Researchers and data owners talk to the nodes only through control flow: submit, approve,
watch, read an aggregate. No endpoint returns rows or shares.

Modules, in dependency order:

- ``endpoint``   the declaration of one endpoint: method, path, roles, schemas (one table
                 drives routing, authorisation and the OpenAPI document)
- ``problems``   errors as RFC 9457 problem documents; the one DicError -> status map
- ``auth``       who is calling: node-issued bearer tokens or OIDC JWTs; role checks
- ``schemas``    JSON Schemas of request and response bodies
- ``health``     ``/live``, ``/ready``, ``/metrics``
- ``studies``    studies, analysis requests, approvals, standing policies
- ``audit``      audit chain head and verification
- ``openapi``    the OpenAPI 3.1 document, generated from the endpoint table
- ``app``        ``create_app(config)``: app keys, middlewares, lifecycles
"""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
