"""Ed25519 signatures (RFC 8032) over canonical JSON: how a person's word travels.

Nodes never take a person's word relayed by another node: a researcher signs each analysis
request and a data owner each approval or standing policy, with an Ed25519 key whose public
half an admin registered on all three nodes. The signed bytes are the canonical JSON
(:mod:`dic_connector.trust.canonical`, an RFC 8785 subset without floats) of the payload; the
API body is ``{"payload": <that text>, "signature": <base64>}``. What the payloads hold is
:mod:`dic_connector.trust.payloads`.
"""

from __future__ import annotations

import base64
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dic_connector.errors import SignatureError
from dic_connector.trust.canonical import canonical_json


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key an admin registers for the signer."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def signed(payload: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, str]:
    """The API body for ``payload`` signed with ``key``."""
    text = canonical_json(payload)
    return {"payload": text, "signature": base64.b64encode(key.sign(text.encode())).decode()}


def verify_ed25519(public_key: bytes, payload: bytes, signature: bytes, what: str) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is a valid Ed25519 signature."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"{what}: Ed25519 signature does not verify") from exc
