"""Who is calling: node-issued bearer tokens or OIDC JWTs, and the role check per endpoint.

Two credential kinds arrive as ``Authorization: Bearer <credential>``:

- **Node-issued API tokens** (``dic_<id>_<secret>``), stored hashed
  (:class:`~dic_connector.node.store.principals.TokenRepository`).
- **OIDC JWTs** from the hospital's identity provider, verified *offline* against a
  configured JWKS file (no network call per request): signature with an asymmetric
  algorithm from the configured list only (never ``none`` or HS*, which prevents algorithm
  confusion; RFC 8725 §3.1-3.2), ``iss``, ``aud``, ``exp``, ``nbf``. Verification uses PyJWT,
  a well-kept library, rather than hand-written JOSE. The ``sub`` claim must name a
  registered, enabled principal; the role comes from the node's database, never from the
  token, so an identity provider cannot grant itself data-owner rights.

A verified node token is remembered for :data:`VERIFIED_TTL_S` seconds (by the SHA-256 of
the credential, never the credential itself), so a researcher's status polls and the next
call of a request's life do not read the token, its principal and a transaction each time:
a revocation, a disabled principal or a changed role written by this process (any commit
writing a principal or a token: :class:`~dic_connector.node.store.unit_of_work.CredentialsGeneration`)
takes effect at once; one written by another process (directly in the database) within
:data:`VERIFIED_TTL_S`; a token's ``expires_at`` is never outlived. JWTs are verified on
every call (their expiry is theirs to carry).

Every failure gives the same 401 message, so a caller learns nothing about which check
failed. Credentials never appear in logs or messages; :meth:`Authenticator.failure_class`
names only the *shape* of a failed credential (for ``/metrics``) and a node token's public
id (for :mod:`~dic_connector.node.api.throttle`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from aiohttp import web

from dic_connector.database.columns import utcnow
from dic_connector.errors import AuthenticationError, AuthorizationError, ConfigError
from dic_connector.node.config import AuthConfig
from dic_connector.node.store.models import Principal
from dic_connector.node.store.principals import token_id_of
from dic_connector.node.store.unit_of_work import Store
from dic_connector.vocabulary import Role

_INVALID = "missing, invalid or expired credentials"
#: The kinds of failed authentication ``/metrics`` counts (see ``failure_class``; the last
#: is a connector's or peer's missing client certificate).
FAILURE_REASONS = ("missing", "malformed", "token", "jwt", "certificate")
TOKEN_PREFIX = "dic_"
#: how long a verified node token is trusted without reading it again (module docstring)
VERIFIED_TTL_S = 2.0
#: most verified tokens remembered at once
VERIFIED_MAX = 4096


@dataclass(frozen=True)
class Identity:
    """The authenticated caller of one request."""

    principal_id: uuid.UUID
    name: str
    role: Role
    site_id: str | None

    @classmethod
    def of(cls, principal: Principal) -> Identity:
        return cls(principal.id, principal.name, principal.role, principal.site_id)

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"{self.role.value}:{self.name}"


class JwtVerifier:
    """Offline verification of OIDC JWTs against a JWKS document."""

    def __init__(self, config: AuthConfig) -> None:
        if config.jwks_file is None:
            raise ConfigError("Config 'auth.jwks_file' is required for JWT verification")
        try:
            jwks = json.loads(Path(config.jwks_file).read_text())
            self._keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(jwks).keys}
        except (OSError, ValueError, jwt.PyJWTError) as exc:
            raise ConfigError(f"Config 'auth.jwks_file' ({config.jwks_file}) is not a "
                              f"readable JWKS document: {exc}") from exc
        self._config = config

    def subject(self, token: str) -> str:
        """The verified ``sub`` of ``token``; AuthenticationError on any failure."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._keys.get(header.get("kid")) if header.get("kid") else (
                next(iter(self._keys.values())) if len(self._keys) == 1 else None)
            if key is None:
                raise AuthenticationError(_INVALID)
            claims = jwt.decode(
                token, key.key, algorithms=list(self._config.jwt_algorithms),
                audience=self._config.jwt_audience, issuer=self._config.jwt_issuer,
                options={"require": ["exp", "iss", "aud", "sub"]}, leeway=30)
        except jwt.PyJWTError:
            raise AuthenticationError(_INVALID) from None
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError(_INVALID)
        return subject


class Authenticator:
    """Turns the Authorization header of a request into an :class:`Identity`."""

    def __init__(self, store: Store, jwt_verifier: JwtVerifier | None, *,
                 ttl_s: float = VERIFIED_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._jwt = jwt_verifier
        self._ttl_s = ttl_s
        self._clock = clock
        #: SHA-256 of a verified node token -> its identity, the credentials generation it
        #: was verified at and until when (``clock``) it is trusted
        self._verified: dict[bytes, tuple[Identity, int, float]] = {}

    def failure_class(self, request: web.Request) -> tuple[str, str | None]:
        """What kind of credential failed, and the token id it names (public, or None).

        ``missing`` (no bearer credential), ``malformed`` (neither a well-formed node token
        nor, when JWTs are accepted, anything else), ``token`` (a well-formed node token that
        did not verify: unknown, wrong secret, revoked, expired, principal disabled) or
        ``jwt`` (a JWT that did not verify or names nobody enabled)."""
        credential = _bearer(request)
        if credential is None:
            return "missing", None
        if credential.startswith(TOKEN_PREFIX):
            token_id = token_id_of(credential)
            return ("malformed", None) if token_id is None else ("token", token_id.hex)
        return ("jwt", None) if self._jwt is not None else ("malformed", None)

    async def identify(self, request: web.Request) -> Identity:
        credential = _bearer(request)
        if credential is None:
            raise AuthenticationError(_INVALID)
        touch: uuid.UUID | None = None
        key = None
        if credential.startswith(TOKEN_PREFIX):
            key = hashlib.sha256(credential.encode()).digest()
            known = self._verified.get(key)
            if known is not None:
                identity, generation, until = known
                if generation == self._store.credentials.value and self._clock() < until:
                    return identity
                del self._verified[key]
        generation = self._store.credentials.value
        async with self._store.reading() as uow:
            if credential.startswith(TOKEN_PREFIX):
                try:
                    checked = await uow.tokens.check(credential)
                except AuthorizationError:
                    raise AuthenticationError(_INVALID) from None
                principal = checked.principal
                touch = checked.token_id if checked.touch_due else None
            elif self._jwt is not None:
                named = await uow.principals.by_name(self._jwt.subject(credential))
                if named is None or named.disabled_at is not None:
                    raise AuthenticationError(_INVALID)
                principal = named
            else:
                raise AuthenticationError(_INVALID)
        if touch is not None:  # at most once a minute per token: see store.principals
            async with self._store.unit_of_work() as uow:
                await uow.tokens.touch(touch)
            generation = self._store.credentials.value  # moved on by the touch itself
        identity = Identity.of(principal)
        if key is not None:
            self._remember(key, identity, generation, checked.expires_at)
        return identity

    def _remember(self, key: bytes, identity: Identity, generation: int,
                  expires_at: dt.datetime | None) -> None:
        trusted = self._ttl_s
        if expires_at is not None:
            trusted = min(trusted, (expires_at - utcnow()).total_seconds())
        if trusted <= 0:
            return
        if len(self._verified) >= VERIFIED_MAX:  # stale ones first, then anything
            now = self._clock()
            self._verified = {k: v for k, v in self._verified.items() if v[2] > now}
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
        self._verified[key] = (identity, generation, self._clock() + trusted)


def _bearer(request: web.Request) -> str | None:
    scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


def require_role(identity: Identity, roles: frozenset[Role]) -> None:
    if identity.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise AuthorizationError(f"this operation needs one of the roles: {allowed}")
