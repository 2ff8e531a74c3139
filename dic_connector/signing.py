"""What researchers and data owners sign, and how: the client side of signed control flow.

Nodes never take a person's word relayed by another node: a researcher signs each analysis
request and a data owner each approval or standing policy, with an Ed25519 key (RFC 8032)
whose public half an admin registered on all three nodes. The signed bytes are the canonical
JSON (:mod:`dic_connector.store.canonical`, an RFC 8785 subset without floats) of the
payload; the API body is ``{"payload": <that text>, "signature": <base64>}``.

These helpers build the payloads the nodes expect, so a client (the CLI, the demo, a
notebook) cannot get their shape wrong.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .store.canonical import canonical_json


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key an admin registers for the signer."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signed(payload: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, str]:
    """The API body for ``payload`` signed with ``key``."""
    text = canonical_json(payload)
    return {"payload": text, "signature": base64.b64encode(key.sign(text.encode())).decode()}


def analysis_request(study_id: uuid.UUID | str, researcher: str, analysis: str,
                     datasets: Iterable[uuid.UUID | str],
                     parameters: dict[str, Any] | None = None, analysis_version: str = "1",
                     request_id: uuid.UUID | None = None) -> dict[str, Any]:
    """A request payload; the id is chosen here, so resubmitting it is idempotent."""
    return {"type": "analysis_request", "id": str(request_id or uuid.uuid4()),
            "study_id": str(study_id), "researcher": researcher, "analysis": analysis,
            "analysis_version": analysis_version, "parameters": parameters or {},
            "datasets": sorted(str(d) for d in datasets)}


def approval(request_id: uuid.UUID | str, site: str, decision: str = "approve"
             ) -> dict[str, Any]:
    return {"type": "approval", "request_id": str(request_id), "site": site,
            "decision": decision}


def policy(site: str, analyses: list[str], columns: list[str], min_cell_count: int,
           valid_for: dt.timedelta) -> dict[str, Any]:
    expires = (dt.datetime.now(dt.UTC) + valid_for).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"type": "policy", "site": site, "analyses": analyses, "columns": columns,
            "min_cell_count": min_cell_count, "expires_at": expires}
