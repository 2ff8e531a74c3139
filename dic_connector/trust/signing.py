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
import binascii
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_der_public_key,
    load_pem_private_key,
    load_pem_public_key,
)

from dic_connector.errors import ConfigError, SignatureError
from dic_connector.trust.canonical import canonical_json


def public_key_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key an admin registers for the signer."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def write_private_key(path: Path, key: Ed25519PrivateKey | None = None) -> Ed25519PrivateKey:
    """Write ``key`` (a new one if None) to ``path`` as PKCS#8 PEM, mode 0600; never
    overwrites a file (a signing key is a person's identity: replacing it is deliberate)."""
    key = key or Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ConfigError(f"{path} exists; a signing key is never overwritten (choose another "
                          "file or remove it first)") from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM file (as :func:`write_private_key` writes it)."""
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise ConfigError(f"signing key file {path} not found") from None
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"{path} is not an unencrypted PEM private key "
                          f"({type(exc).__name__})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path} holds a {type(key).__name__}; expected an Ed25519 key")
    return key


def public_key_pem(key: Ed25519PrivateKey) -> str:
    """The public half as a PEM SubjectPublicKeyInfo (RFC 8410)."""
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo
                                         ).decode()


def parse_public_key(text: str) -> bytes:
    """The raw 32-byte Ed25519 public key from what a person hands an admin: base64 of the
    raw key, a PEM ``PUBLIC KEY`` (RFC 8410 SubjectPublicKeyInfo), base64 of its DER, or
    the path of a file holding either. :class:`ConfigError` saying what was expected."""
    value = text.strip()
    if "-----BEGIN" not in value and len(value) < 512 and Path(value).is_file():
        value = Path(value).read_text().strip()
    if value.startswith("-----BEGIN"):
        try:
            public = load_pem_public_key(value.encode())
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError("the signing key is PEM but not a public key") from None
    else:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError("the signing key is neither base64 nor PEM nor a file") from None
        if len(raw) == 32:
            return raw
        try:
            public = load_der_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            raise ConfigError(f"the signing key decodes to {len(raw)} bytes: expected the "
                              "32-byte Ed25519 key or its DER SubjectPublicKeyInfo") from None
    if not isinstance(public, Ed25519PublicKey):
        raise ConfigError(f"the signing key is a {type(public).__name__}; expected Ed25519")
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


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
