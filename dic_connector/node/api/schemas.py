"""JSON Schemas (draft 2020-12, as OpenAPI 3.1 uses) of request and response bodies.

Response schemas are closed (``additionalProperties: false``) on purpose: a test that
validates every response against them then also proves no unexpected field (a share, a row)
slipped into a body.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jsonschema

from dic_connector.errors import SignatureError
from dic_connector.node.api.endpoint import compiled

Schema = dict[str, Any]

UUID: Schema = {"type": "string", "format": "uuid"}
TIMESTAMP: Schema = {"type": "string", "format": "date-time"}
NAME: Schema = {"type": "string", "minLength": 1, "maxLength": 200}
BASE64: Schema = {"type": "string", "pattern": "^[A-Za-z0-9+/]+={0,2}$", "maxLength": 200}


def obj(properties: dict[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": properties,
            "required": list(properties) if required is None else required,
            "additionalProperties": False}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


PROBLEM = obj({"type": {"type": "string"}, "title": {"type": "string"},
               "status": {"type": "integer"}, "detail": {"type": "string"}})

HEALTH = obj({"status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
              "node": {"type": "string"}, "checks": {"type": "object",
                                                     "additionalProperties": {"type": "string"}}},
             required=["status", "node"])

STUDY_CREATE = obj({"title": {"type": "string", "minLength": 1, "maxLength": 300},
                    "description": {"type": "string", "maxLength": 5000}}, required=["title"])
STUDY = obj({"id": UUID, "title": {"type": "string"}, "description": {"type": "string"},
             "created_at": TIMESTAMP})

#: Parameters: a small JSON object of named parameters. What each analysis accepts is its own
#: ``parameters_schema`` (``GET /v1/analyses``), checked at submission against the analysis and
#: the datasets' manifests (``coordination.verify.check_analysis``), so one recipe's parameters
#: (a filter tree, survival's groups) never need a place in a schema of the API. Decimals are
#: strings ("0.25"), not JSON numbers: requests are signed as canonical JSON (RFC 8785 subset
#: without floats, see trust.canonical).
REQUEST_PARAMETERS: Schema = {
    "type": "object",
    "maxProperties": 32,
    "propertyNames": {"pattern": "^[a-z][a-z0-9_]{0,63}$"},
}
#: The researcher-signed payload of a request (``SIGNED.payload`` parsed).
REQUEST_PAYLOAD = obj({
    "type": {"const": "analysis_request"}, "id": UUID, "study_id": UUID,
    "researcher": {"type": "string", "minLength": 1, "maxLength": 200},
    "analysis": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
    "analysis_version": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$", "maxLength": 32},
    "parameters": REQUEST_PARAMETERS,
    "datasets": {**array(UUID), "minItems": 1, "maxItems": 50, "uniqueItems": True},
})
APPROVAL_VIEW = obj({"site": {"type": "string"},
                     "decision": {"type": "string", "enum": ["approve", "deny"]},
                     "created_at": TIMESTAMP})
REQUEST = obj({
    "id": UUID, "study_id": UUID, "analysis": {"type": "string"},
    "analysis_version": {"type": "string"}, "parameters": REQUEST_PARAMETERS,
    "datasets": array(UUID), "sites": array({"type": "string"}),
    "status": {"type": "string"}, "status_reason": {"type": ["string", "null"]},
    "approvals": array(APPROVAL_VIEW), "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
})
RESULT = obj({"request_id": UUID, "aggregates": {"type": "object"}, "created_at": TIMESTAMP})

SIGNED = obj({"payload": {"type": "string", "minLength": 2, "maxLength": 10_000},
              "signature": BASE64})


def schema_error(schema: Schema | Any, instance: Any) -> str | None:
    """``at <path>: <message>`` for the most relevant way ``instance`` breaks ``schema``
    (a schema, or a validator from :func:`.endpoint.compiled`; JSON Schema 2020-12, formats
    checked), or None when it fits."""
    validator = compiled(schema) if isinstance(schema, dict) else schema
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"at {where}: {error.message}"


def decode_signature(text: str) -> bytes:
    """The 64 bytes of a ``SIGNED`` body's base64 Ed25519 signature."""
    try:
        signature = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("signature is not base64") from None
    if len(signature) != 64:
        raise SignatureError("an Ed25519 signature is 64 bytes")
    return signature
POLICY = obj({"id": UUID, "site": {"type": "string"}, "analyses": array({"type": "string"}),
              "columns": array({"type": "string"}), "min_cell_count": {"type": "integer"},
              "expires_at": TIMESTAMP, "created_at": TIMESTAMP,
              "perturbation": {"type": ["object", "null"]},
              "min_subset_size": {"type": ["integer", "null"]},
              "max_levels": {"type": ["integer", "null"]},
              "ledger": {"type": ["boolean", "null"]}},
             required=["id", "site", "analyses", "columns", "min_cell_count", "expires_at",
                       "created_at"])

DATASET = obj({
    "id": UUID, "site": {"type": "string"}, "name": {"type": "string"},
    "latest_version": {"oneOf": [{"type": "null"}, obj({
        "id": UUID, "number": {"type": "integer"}, "row_count": {"type": "integer"},
        "columns": array({"type": "string"}), "committed_at": TIMESTAMP})]},
})
DELETED = obj({"dataset_id": UUID, "versions_erased": {"type": "integer"}})
SUPERSEDED = obj({"version_id": UUID, "versions_erased": {"type": "integer", "minimum": 0}})

AUDIT_HEAD = obj({"node": {"type": "string"}, "seq": {"type": "integer"},
                  "hash": {"type": "string"}})
AUDIT_PEERS = obj({"node": {"type": "string"}, "peers": {
    "type": "object", "additionalProperties": obj({
        "head": {"oneOf": [{"type": "null"}, obj({"seq": {"type": "integer"},
                                                  "hash": {"type": "string"},
                                                  "observed_at": TIMESTAMP})]},
        "mismatches": array(obj({"recorded_seq": {"type": "integer"},
                                 "recorded_hash": {"type": "string"},
                                 "reported_seq": {"type": "integer"},
                                 "reported_hash": {"type": "string"},
                                 "reason": {"type": "string"}, "detected_at": TIMESTAMP})),
        "exchanges": {"type": "integer"}, "unreachable": {"type": "integer"},
        "last_error": {"type": "string"}})}})
AUDIT_COMPARE = obj({"request_id": UUID, "consistent": {"type": "boolean"},
                     "nodes": {"type": "object", "additionalProperties": obj({
                         "chain_ok": {"type": "boolean"}, "reason": {"type": "string"},
                         "status": {"type": "string"},
                         "result_sha256": {"type": ["string", "null"]},
                         "head_at_start": {"oneOf": [{"type": "null"}, obj({
                             "seq": {"type": "integer"}, "hash": {"type": "string"}})]}})}})
AUDIT_VERIFY = obj({"node": {"type": "string"}, "ok": {"type": "boolean"},
                    "entries": {"type": "integer"}, "head": AUDIT_HEAD,
                    "broken_seq": {"type": ["integer", "null"]},
                    "reason": {"type": ["string", "null"]}})
