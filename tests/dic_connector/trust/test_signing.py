"""Ed25519 over canonical JSON: what a signed API body is and how it verifies."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dic_connector.errors import SignatureError
from dic_connector.trust.signing import public_key_bytes, signed, verify_ed25519


def test_ed25519_verification() -> None:
    private = Ed25519PrivateKey.generate()
    public = public_key_bytes(private)
    assert len(public) == 32
    verify_ed25519(public, b"payload", private.sign(b"payload"), "approval")
    with pytest.raises(SignatureError, match="approval"):
        verify_ed25519(public, b"payload!", private.sign(b"payload"), "approval")
    with pytest.raises(SignatureError):
        verify_ed25519(b"short", b"payload", private.sign(b"payload"), "approval")


def test_a_signed_body_carries_the_canonical_text_and_its_signature() -> None:
    private = Ed25519PrivateKey.generate()
    body = signed({"type": "approval", "z": 1, "a": "ü"}, private)
    assert body["payload"] == '{"a":"ü","type":"approval","z":1}'
    verify_ed25519(public_key_bytes(private), body["payload"].encode(),
                   base64.b64decode(body["signature"]), "approval")
    assert json.loads(body["payload"])["z"] == 1
