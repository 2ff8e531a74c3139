"""SMART Backend Services against sekmet's real token endpoint; JWS and token renewal units."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from dic_connector.errors import SourceAuthError
from dic_connector.sources.auth import (
    SmartBackendAuth,
    SmartBackendAuthenticator,
    load_signing_key,
    sign_jws,
)
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, HttpConfig, RetryPolicy

if TYPE_CHECKING:
    from conftest import SekmetServer

FAST = HttpConfig(retry=RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02))


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def pull_patients(base_url: str, auth: SmartBackendAuth) -> list[dict[str, Any]]:
    spec = SearchSpec("Patient", params=(("_id", "p00001,p00002"),))
    async with FhirRestSource(FhirRestConfig(base_url, (spec,), auth=auth, http=FAST)) as source:
        return [r async for r in source.stream()]


@pytest.mark.fhir_server
@pytest.mark.parametrize("alg", ["RS384", "ES384"])
async def test_smart_backend_services_against_real_token_endpoint(sekmet: SekmetServer,
                                                                  alg: str) -> None:
    key, client = (sekmet.rs_key, sekmet.rs_client) if alg == "RS384" else \
        (sekmet.es_key, sekmet.es_client)
    auth = SmartBackendAuth(client, pem(key), alg=alg)  # type: ignore[arg-type]
    resources = await pull_patients(sekmet.base_url, auth)
    assert sorted(r["id"] for r in resources) == ["p00001", "p00002"]


@pytest.mark.fhir_server
async def test_wrong_key_gives_clear_auth_error(sekmet: SekmetServer) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    auth = SmartBackendAuth(sekmet.rs_client, pem(stranger), alg="RS384")
    with pytest.raises(SourceAuthError) as info:
        await pull_patients(sekmet.base_url, auth)
    message = str(info.value)
    assert f"client '{sekmet.rs_client}' was refused" in message
    assert "HTTP 401: invalid_client: client_assertion verification failed" in message
    assert "/auth/token" in message
    assert info.value.__cause__ is None  # a clear error, not a chained stack of transport errors


@pytest.mark.fhir_server
async def test_unknown_client_and_wrong_key_type(sekmet: SekmetServer) -> None:
    with pytest.raises(SourceAuthError, match="invalid_client: Unknown client_id"):
        await pull_patients(sekmet.base_url, SmartBackendAuth("nobody", pem(sekmet.rs_key)))
    with pytest.raises(SourceAuthError, match="does not fit alg ES384"):
        SmartBackendAuthenticator(SmartBackendAuth("x", pem(sekmet.rs_key), alg="ES384"), "")
    with pytest.raises(SourceAuthError, match="cannot be loaded"):
        load_signing_key(b"-----BEGIN PRIVATE KEY-----\nnot a key\n", "RS384")


@pytest.mark.fhir_server
async def test_token_cached_and_renewed_before_expiry(sekmet: SekmetServer) -> None:
    now = [1_000_000.0]
    auth = SmartBackendAuth(sekmet.rs_client, pem(sekmet.rs_key), renew_before_s=60)
    authenticator = SmartBackendAuthenticator(auth, sekmet.base_url, clock=lambda: now[0])
    async with HttpClient(sekmet.base_url, config=FAST) as client:
        first = await authenticator.header(client)
        now[0] += 3000  # sekmet issues 3600 s tokens: still fresh
        assert await authenticator.header(client) == first
        assert authenticator.tokens_issued == 1
        now[0] += 560  # within renew_before_s of expiry
        second = await authenticator.header(client)
        assert second != first and authenticator.tokens_issued == 2


def test_jws_signatures_verify_with_public_keys() -> None:
    claims = {"iss": "c", "sub": "c", "aud": "https://x/token", "exp": 1, "jti": "j"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = sign_jws(claims, rsa_key, "RS384", kid="k1")
    head, body, sig = token.split(".")
    assert json.loads(_unb64(head)) == {"alg": "RS384", "typ": "JWT", "kid": "k1"}
    assert json.loads(_unb64(body)) == claims
    rsa_key.public_key().verify(_unb64(sig), f"{head}.{body}".encode(), padding.PKCS1v15(),
                                hashes.SHA384())
    ec_key = ec.generate_private_key(ec.SECP384R1())
    head, body, sig = sign_jws(claims, ec_key, "ES384").split(".")
    raw = _unb64(sig)
    assert len(raw) == 96  # r || s, 48 bytes each (RFC 7518 §3.4)
    der = encode_dss_signature(int.from_bytes(raw[:48], "big"), int.from_bytes(raw[48:], "big"))
    ec_key.public_key().verify(der, f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA384()))


@pytest.mark.fhir_server
async def test_token_expired_at_the_server_is_renewed(
        sekmet_launcher: Callable[..., SekmetServer]) -> None:
    """A server issuing 3 s tokens: a token cached past expiry is refused (401) and renewed
    (3 s, not 1 s: on a loaded machine a 1 s renewal could expire again on its way)."""
    server = sekmet_launcher(token_lifetime_s=3)
    server.put([{"resourceType": "Patient", "id": "p00001"}])
    auth = SmartBackendAuth(server.rs_client, pem(server.rs_key), renew_before_s=0)
    async with HttpClient(server.base_url, auth, FAST) as client:
        _, first = await client.request("GET", f"{server.base_url}/Patient", want_json=True)
        await asyncio.sleep(4.1)  # let the token expire at the server (JWT exp has 1 s steps)
        renewals_before = client.authenticator.tokens_issued  # type: ignore[attr-defined]
        # the client believes its token still fresh (clock skew, early revocation): only the
        # server's 401 can tell, and must lead to one renewal, not an error
        client.authenticator._expires_at = float("inf")  # type: ignore[attr-defined]
        _, second = await client.request("GET", f"{server.base_url}/Patient", want_json=True)
    assert first["total"] == second["total"] == 1
    assert renewals_before == 1
    assert client.authenticator.tokens_issued == 2  # type: ignore[attr-defined]
