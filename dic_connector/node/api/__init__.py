"""The node's control-flow HTTP API (aiohttp), served by :func:`create_app`.

Researchers and data owners talk to the nodes only through control flow: submit, approve,
watch, read an aggregate. No endpoint returns rows or shares.

Modules, in dependency order:

- ``endpoint``   the declaration of one endpoint: method, path, roles, schemas (one table
                 drives routing, authorisation and the OpenAPI document)
- ``problems``   errors as RFC 9457 problem documents; the one DicError -> status map
- ``auth``       who is calling: node-issued bearer tokens or OIDC JWTs; role checks
- ``throttle``   token buckets on failed authentication, per client address and token id
- ``schemas``    JSON Schemas of request and response bodies
- ``bodies``     request bodies read with a limit on the bytes that actually arrive
- ``changes``    in-process wake-ups of a request's waiters, told by the store's commits
- ``keys``       the typed app keys (``web.AppKey``) and the caller's identity
- ``access``     the access log middleware: one line per request, never a body or token
- ``health``     ``/live``, ``/ready``, ``/metrics``
- ``caller``     ``/v1/me``: the caller's name, role and site, and the three nodes' URLs
- ``requests``   studies and analysis requests: submit, list, status, result, cancel
- ``progress``   a request's status on all three nodes, the peers asked over mutual TLS
- ``approvals``  data owners' signed approvals and standing policies
- ``datasets``   dataset metadata and an owner's deletion
- ``analyses``   the analyses catalogue: what each computes, opens (to whom) and takes
- ``audit``      audit chain head, verification and the cross-node comparison
- ``peer``       the other two nodes' relay, agreement and erase calls (mutual TLS)
- ``uploads``    connectors' two-phase uploads and dataset withdrawal (mutual TLS)
- ``ui``         the web page at ``/ui/``: static files with a strict CSP
- ``openapi``    the OpenAPI 3.1 document, generated from the endpoint table
- ``app``        ``create_app(config)``: app keys, middlewares, lifecycles
"""

from __future__ import annotations

from dic_connector.node.api.app import create_app

__all__ = ["create_app"]
