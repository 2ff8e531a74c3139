"""Ed25519 over canonical JSON: what a signed API body is and how it verifies; key files
and the forms a public key is handed over in."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from dic_connector.errors import ConfigError, SignatureError
from dic_connector.trust.signing import (
    load_private_key,
    parse_public_key,
    public_key_bytes,
    public_key_pem,
    signed,
    verify_ed25519,
    write_private_key,
)


def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


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


def test_public_keys_in_every_usual_form(tmp_path: Path) -> None:
    key = write_private_key(tmp_path / "alice.pem")
    assert (tmp_path / "alice.pem").stat().st_mode & 0o777 == 0o600
    assert public_key_bytes(load_private_key(tmp_path / "alice.pem")) == public_key_bytes(key)
    raw = public_key_bytes(key)
    pem = public_key_pem(key)
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    (tmp_path / "alice.pub").write_text(pem)
    for form in (base64.b64encode(raw).decode(), pem, base64.b64encode(der).decode(),
                 str(tmp_path / "alice.pub"), f"  {pem}\n"):
        assert parse_public_key(form) == raw
    ec = ec_key().public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for bad, message in ((ec.decode(), "expected Ed25519"), ("not base64!", "neither"),
                         (base64.b64encode(b"x" * 31).decode(), "31 bytes"),
                         ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
                          "not a public key")):
        with pytest.raises(ConfigError, match=message):
            parse_public_key(bad)
    with pytest.raises(ConfigError, match="never overwritten"):
        write_private_key(tmp_path / "alice.pem")
    with pytest.raises(ConfigError, match="not found"):
        load_private_key(tmp_path / "nobody.pem")
