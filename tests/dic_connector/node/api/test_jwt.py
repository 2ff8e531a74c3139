"""OIDC JWTs verified offline against a JWKS file; the role comes from the node, not the token."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from dic_connector.errors import AuthenticationError, ConfigError
from dic_connector.node.api.auth import Authenticator, JwtVerifier
from dic_connector.node.config import AuthConfig

from .conftest import Node


def _jwks(tmp_path: Path, key: ec.EllipticCurvePrivateKey, kid: str = "k1") -> Path:
    jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [{**jwk, "kid": kid, "alg": "ES256", "use": "sig"}]}))
    return path


def _token(key: ec.EllipticCurvePrivateKey, **claims: object) -> str:
    now = dt.datetime.now(dt.UTC)
    base = {"iss": "https://idp.example", "aud": "dic", "sub": "alice",
            "exp": now + dt.timedelta(minutes=5), "iat": now}
    return jwt.encode({**base, **claims}, key, algorithm="ES256", headers={"kid": "k1"})


@pytest.fixture
def verifier(tmp_path: Path) -> tuple[JwtVerifier, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    config = AuthConfig(jwks_file=_jwks(tmp_path, key), jwt_issuer="https://idp.example",
                        jwt_audience="dic")
    return JwtVerifier(config), key


def test_valid_token_gives_subject(verifier: tuple[JwtVerifier, ec.EllipticCurvePrivateKey]
                                   ) -> None:
    check, key = verifier
    assert check.subject(_token(key)) == "alice"


@pytest.mark.parametrize("claims", [
    {"aud": "other"}, {"iss": "https://evil.example"},
    {"exp": dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)}, {"sub": ""},
])
def test_bad_claims_are_refused(verifier: tuple[JwtVerifier, ec.EllipticCurvePrivateKey],
                                claims: dict[str, object]) -> None:
    check, key = verifier
    with pytest.raises(AuthenticationError):
        check.subject(_token(key, **claims))


def test_wrong_key_and_algorithm_confusion_are_refused(
        verifier: tuple[JwtVerifier, ec.EllipticCurvePrivateKey]) -> None:
    check, _ = verifier
    with pytest.raises(AuthenticationError):
        check.subject(_token(ec.generate_private_key(ec.SECP256R1())))
    unsigned = jwt.encode({"iss": "https://idp.example", "aud": "dic", "sub": "alice",
                           "exp": 4_000_000_000}, None, algorithm="none",
                          headers={"kid": "k1"})
    with pytest.raises(AuthenticationError):
        check.subject(unsigned)


def test_unreadable_jwks_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not a readable JWKS"):
        JwtVerifier(AuthConfig(jwks_file=tmp_path / "bad.json", jwt_issuer="i",
                               jwt_audience="a"))


async def test_jwt_subject_must_be_a_registered_principal(
        node: Node, verifier: tuple[JwtVerifier, ec.EllipticCurvePrivateKey]) -> None:
    check, key = verifier
    auth = Authenticator(node.store, check)

    class FakeRequest:
        def __init__(self, token: str) -> None:
            self.headers = {"Authorization": f"Bearer {token}"}

    who = await auth.identify(FakeRequest(_token(key)))  # type: ignore[arg-type]
    assert (who.name, who.role.value) == ("alice", "researcher")
    with pytest.raises(AuthenticationError):
        await auth.identify(FakeRequest(_token(key, sub="nobody")))  # type: ignore[arg-type]
