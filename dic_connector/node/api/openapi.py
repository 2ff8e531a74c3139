"""The OpenAPI 3.1 document, generated from the endpoint table so it cannot drift.

Every operation lists its success response with the closed JSON Schema of its body, and the
problem responses (RFC 9457) it can give: 400 for a body that breaks its schema, 401/403 for
protected operations, 429 with ``Retry-After`` for a caller over its budget of failed
authentications (:mod:`.throttle`), 404 for path parameters, 409 for state conflicts; a
conditional operation's ``ETag`` header and its ``304``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from dic_connector.node.api.endpoint import Endpoint
from dic_connector.node.api.problems import PROBLEM_MEDIA_TYPE
from dic_connector.node.api.schemas import PROBLEM

_PARAM = re.compile(r"{([a-z_]+)}")


def _problem(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}


def _throttled() -> dict[str, Any]:
    return {**_problem("Too many failed authentications from this address or token id"),
            "headers": {"Retry-After": {
                "description": "Seconds until a failed authentication is allowed again",
                "required": True, "schema": {"type": "integer", "minimum": 1}}}}


def _operation(endpoint: Endpoint) -> dict[str, Any]:
    success: dict[str, Any] = {"description": endpoint.summary}
    if endpoint.media_type == "application/json" and endpoint.response_schema is not None:
        success["content"] = {"application/json": {"schema": endpoint.response_schema}}
    elif endpoint.media_type != "application/json":
        success["content"] = {endpoint.media_type: {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(endpoint.status): success}
    if endpoint.conditional:
        etag = {"ETag": {"description": "Tag of this body, for If-None-Match",
                         "required": True, "schema": {"type": "string"}}}
        success["headers"] = etag
        responses["304"] = {"description": "Unchanged from If-None-Match (within the wait)",
                            "headers": etag}
    if endpoint.path == "/ready":
        responses["503"] = {"description": "Not ready",
                            "content": {"application/json": {"schema": endpoint.response_schema}}}
    if endpoint.request_schema is not None:
        responses["400"] = _problem("The body is not JSON or breaks its schema")
    elif endpoint.parameters:
        responses["400"] = _problem("A query parameter is not valid")
    if endpoint.connector:
        responses["401"] = _problem("No connector TLS client certificate")
        responses["409"] = _problem("The upload is in a state that does not allow this")
        responses["404"] = _problem("No such upload of the caller's site")
    elif endpoint.peer:
        responses["401"] = _problem("No peer node TLS client certificate")
        responses["409"] = _problem("This node's own checks refuse the call")
        responses["422"] = _problem("Valid JSON, but not a valid request")
    elif not endpoint.is_public:
        responses["401"] = _problem("Missing, invalid or expired credentials")
        responses["403"] = _problem("The caller's role may not do this")
        responses["409"] = _problem("The object is in a state that does not allow this")
        responses["422"] = _problem("Valid JSON, but not a valid request")
    if not endpoint.is_public:
        responses["429"] = _throttled()
    if endpoint.uuid_params or endpoint.method != "GET":
        responses["404"] = _problem("No such object visible to the caller")
    operation: dict[str, Any] = {
        "operationId": endpoint.operation_id, "summary": endpoint.summary,
        "tags": [endpoint.tag], "responses": responses,
    }
    params = _PARAM.findall(endpoint.path)
    if params or endpoint.parameters:
        operation["parameters"] = [
            {"name": name, "in": "path", "required": True,
             "schema": {"type": "string", "format": "uuid"} if name in endpoint.uuid_params
             else {"type": "string"}} for name in params] + list(endpoint.parameters)
    if endpoint.request_schema is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": endpoint.request_schema}}}
    elif endpoint.body_media_type is not None:
        operation["requestBody"] = {"required": True, "content": {
            endpoint.body_media_type: {"schema": {"type": "string", "format": "binary"}}}}
    if endpoint.connector:
        operation["security"] = [{"connectorCertificate": []}]
    elif endpoint.peer:
        operation["security"] = [{"nodeCertificate": []}]
    elif endpoint.is_public:
        operation["security"] = []
    else:
        operation["x-roles"] = sorted(r.value for r in endpoint.roles)
    return operation


def build_document(endpoints: Iterable[Endpoint], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint)
    return {
        "openapi": "3.1.0",
        "info": {"title": "dic-connector node API", "version": version,
                 "description": "Control-flow API of one compute node. No operation returns "
                                "rows or shares; results hold only opened aggregates."},
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Node-issued API token or OIDC JWT"},
                "connectorCertificate": {"type": "mutualTLS",
                                         "description": "A site connector's client certificate "
                                                        "(SAN connector.<site>)"},
                "nodeCertificate": {"type": "mutualTLS",
                                    "description": "A peer compute node's client certificate "
                                                   "(SAN node-<i>)"}},
        },
        "security": [{"bearer": []}],
    }
