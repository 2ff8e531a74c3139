"""Authentication against FHIR servers: none, HTTP Basic, static bearer, SMART Backend Services.

SMART Backend Services (https://hl7.org/fhir/smart-app-launch/backend-services.html) is the
OAuth 2.0 client-credentials grant with a *signed JWT client assertion* (RFC 7523): the client
signs ``{iss=sub=client_id, aud=token_endpoint, exp<=5 min, jti}`` with its private key
(RS384 or ES384, the two algorithms the spec requires servers to support) and trades it at the
token endpoint, found through ``[base]/.well-known/smart-configuration``, for a short-lived
access token. The token is cached and renewed ``renew_before_s`` before it expires, and once
more when the server answers 401 (a token revoked or expired early).

The JWS (RFC 7515 compact serialisation) is written here directly with ``cryptography``:
it is a few lines, and it keeps a JWT library (and its algorithm-confusion history) out of the
dependency tree. ES384 signatures are converted from DER to the fixed-width ``r || s`` form
JWS requires (RFC 7518 §3.4).

Secrets (passwords, tokens, keys) are excluded from ``repr`` and never put in messages.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from dic_connector.errors import SourceAuthError, SourceError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SmartAlg = Literal["RS384", "ES384"]


@dataclass(frozen=True)
class NoAuth:
    """Send no credentials (an open server, or one behind an authenticating gateway)."""


@dataclass(frozen=True)
class BasicAuth:
    """HTTP Basic (RFC 7617)."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class BearerAuth:
    """A static, long-lived bearer token issued out of band."""

    token: str = field(repr=False)


@dataclass(frozen=True)
class SmartBackendAuth:
    """SMART Backend Services client: client id, private key (PEM) and algorithm."""

    client_id: str
    private_key_pem: bytes = field(repr=False)
    alg: SmartAlg = "RS384"
    key_id: str | None = None
    scope: str = "system/*.read"
    #: token endpoint; discovered from ``.well-known/smart-configuration`` when ``None``
    token_url: str | None = None
    renew_before_s: float = 60.0
    assertion_lifetime_s: int = 240

    @classmethod
    def from_key_file(cls, client_id: str, path: Path, **kwargs: Any) -> SmartBackendAuth:
        return cls(client_id=client_id, private_key_pem=path.read_bytes(), **kwargs)


AuthConfig = NoAuth | BasicAuth | BearerAuth | SmartBackendAuth


class JsonTransport(Protocol):
    """What a token provider needs from the HTTP layer (implemented by ``HttpClient``)."""

    async def fetch_json(self, method: str, url: str, *, data: Mapping[str, str] | None = None,
                         authenticate: bool = True) -> Any: ...


class Authenticator(ABC):
    """Produces the ``Authorization`` header value for requests to one server."""

    #: whether a 401 can be cured by fetching new credentials
    renewable: bool = False

    @abstractmethod
    async def header(self, transport: JsonTransport) -> str | None: ...

    def invalidate(self) -> None:  # noqa: B027 - static credentials have nothing to forget
        """Forget cached credentials after the server refused them."""


class _Static(Authenticator):
    def __init__(self, value: str | None) -> None:
        self._value = value

    async def header(self, transport: JsonTransport) -> str | None:
        return self._value


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def load_signing_key(pem: bytes, alg: SmartAlg) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """Load a PEM private key and check it fits ``alg``; :class:`SourceAuthError` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise SourceAuthError(f"SMART private key cannot be loaded ({type(exc).__name__}); "
                              "expected an unencrypted PEM (PKCS#8 or traditional)") from None
    if alg == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        return key
    if alg == "ES384" and isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.name != "secp384r1":
            raise SourceAuthError(f"ES384 needs a P-384 key, the SMART key is on {key.curve.name}")
        return key
    raise SourceAuthError(f"SMART private key type {type(key).__name__} does not fit alg {alg}")


def sign_jws(claims: Mapping[str, Any], key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey,
             alg: SmartAlg, kid: str | None = None) -> str:
    """Compact JWS (RFC 7515) of ``claims`` signed with RS384 or ES384 (RFC 7518 §3.3, §3.4)."""
    header: dict[str, str] = {"alg": alg, "typ": "JWT"}
    if kid:
        header["kid"] = kid
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims))
    data = signing_input.encode("ascii")
    if isinstance(key, rsa.RSAPrivateKey):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA384())
    else:
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA384())))
        signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")
    return f"{signing_input}.{_b64url(signature)}"


class SmartBackendAuthenticator(Authenticator):
    """Client-credentials grant with a JWT assertion; token cached and renewed before expiry."""

    renewable = True

    def __init__(self, config: SmartBackendAuth, fhir_base_url: str,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._base = fhir_base_url.rstrip("/")
        self._clock = clock
        self._key = load_signing_key(config.private_key_pem, config.alg)
        self._token_url = config.token_url
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        #: number of tokens obtained (observable in tests and metrics)
        self.tokens_issued = 0

    def invalidate(self) -> None:
        self._token = None

    async def header(self, transport: JsonTransport) -> str | None:
        async with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._config.renew_before_s:
                await self._renew(transport)
            return f"Bearer {self._token}"

    async def _discover(self, transport: JsonTransport) -> str:
        url = f"{self._base}/.well-known/smart-configuration"
        doc = await transport.fetch_json("GET", url, authenticate=False)
        endpoint = doc.get("token_endpoint") if isinstance(doc, dict) else None
        if not isinstance(endpoint, str) or not endpoint:
            raise SourceAuthError(f"SMART discovery at {url} has no token_endpoint")
        return endpoint

    async def _renew(self, transport: JsonTransport) -> None:
        if self._token_url is None:
            self._token_url = await self._discover(transport)
        now = int(time.time())
        claims = {"iss": self._config.client_id, "sub": self._config.client_id,
                  "aud": self._token_url, "iat": now, "exp": now + self._config.assertion_lifetime_s,
                  "jti": secrets.token_hex(16)}
        assertion = sign_jws(claims, self._key, self._config.alg, self._config.key_id)
        form = {"grant_type": "client_credentials", "scope": self._config.scope,
                "client_assertion_type": ASSERTION_TYPE, "client_assertion": assertion}
        try:
            answer = await transport.fetch_json("POST", self._token_url, data=form,
                                                authenticate=False)
        except SourceError as exc:
            raise SourceAuthError(f"SMART token request for client '{self._config.client_id}' "
                                  f"was refused: {exc}") from None
        token = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            raise SourceAuthError(f"token endpoint {self._token_url} answered without access_token")
        expires_in = answer.get("expires_in", 300)
        self._token = token
        self._expires_at = self._clock() + float(expires_in if isinstance(expires_in, int | float)
                                                 else 300)
        self.tokens_issued += 1


def make_authenticator(config: AuthConfig, fhir_base_url: str) -> Authenticator:
    """The authenticator for one server and one auth configuration."""
    if isinstance(config, NoAuth):
        return _Static(None)
    if isinstance(config, BasicAuth):
        raw = f"{config.username}:{config.password}".encode()
        return _Static("Basic " + base64.b64encode(raw).decode("ascii"))
    if isinstance(config, BearerAuth):
        return _Static(f"Bearer {config.token}")
    return SmartBackendAuthenticator(config, fhir_base_url)
