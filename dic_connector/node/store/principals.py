"""Principals (who calls the API, in which role) and their hashed bearer tokens.

A token is ``dic_<32 hex digits of the token id>_<secret>``, where the secret is 32 random
bytes, base64url (``secrets.token_urlsafe``, 256 bits). Only ``SHA-256(secret)`` is stored. A
fast hash is right here because the secret is high-entropy: there is nothing to brute-force
that a slow password hash would protect (OWASP Secrets Management Cheat Sheet; the same design
as GitHub's and Django REST Knox's tokens). The public id finds the row; the digests are then
compared with :func:`hmac.compare_digest`, in constant time, and a digest is computed and
compared even when the id is unknown, so timing does not tell which ids exist.

Every failure (malformed, unknown, wrong secret, revoked, expired, principal disabled) raises
the same :class:`~dic_connector.errors.AuthenticationError` message: a caller learns nothing
about which check failed. The token is never part of a message or log.

Checking a token only reads (:meth:`TokenRepository.check`), so the node authenticates every
call in a read-only transaction; ``last_used_at`` is written at most once a minute per token
(:data:`TOUCH_INTERVAL`), in a transaction of its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from dic_connector.errors import AuthenticationError, ConflictError, NotFoundError
from dic_connector.node.store.base import utcnow
from dic_connector.node.store.conflicts import insert
from dic_connector.node.store.models import ApiToken, Principal
from dic_connector.vocabulary import Role

TOKEN_PREFIX = "dic_"
TOKEN_SECRET_BYTES = 32
ED25519_PUBLIC_KEY_BYTES = 32
_TOKEN_RE = re.compile(r"^dic_([0-9a-f]{32})_([A-Za-z0-9_-]{43})$")
_INVALID = "invalid or expired token"
#: How stale a token's ``last_used_at`` may get before a use writes it again.
TOUCH_INTERVAL = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class TokenCheck:
    """A valid token's principal, and whether its ``last_used_at`` is due to be written."""

    principal: Principal
    token_id: uuid.UUID
    touch_due: bool
    #: when the token stops being valid (None: never, unless revoked)
    expires_at: dt.datetime | None = None


def token_id_of(token: str) -> uuid.UUID | None:
    """The public id of a well-formed node token (never its secret), else None."""
    match = _TOKEN_RE.match(token)
    return uuid.UUID(match.group(1)) if match else None


def secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


@dataclass(frozen=True)
class IssuedToken:
    """The plaintext token (shown once to its owner, never stored) and its stored record."""

    token: str
    record: ApiToken

    def __repr__(self) -> str:
        return f"IssuedToken(id={self.record.id})"


class PrincipalRepository:
    """Researchers, data owners (one site each), peer nodes and admins."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def create(self, name: str, role: Role, site_id: str | None = None,
                     signing_public_key: bytes | None = None) -> Principal:
        if (role is Role.DATA_OWNER) != (site_id is not None):
            raise ConflictError(f"principal '{name}': a site is required for, and only for, "
                             "data owners")
        if signing_public_key is not None and len(signing_public_key) != ED25519_PUBLIC_KEY_BYTES:
            raise ConflictError(f"principal '{name}': Ed25519 public key must be 32 bytes")
        principal = Principal(name=name, role=role, site_id=site_id,
                              signing_public_key=signing_public_key)
        await insert(self._session, f"principal '{name}'", principal)
        return principal

    async def get(self, principal_id: uuid.UUID) -> Principal:
        principal = await self._session.get(Principal, principal_id)
        if principal is None:
            raise NotFoundError(f"principal {principal_id} not found")
        return principal

    async def by_name(self, name: str) -> Principal | None:
        return await self._session.scalar(select(Principal).where(Principal.name == name))

    async def disable(self, principal_id: uuid.UUID) -> Principal:
        principal = await self.get(principal_id)
        principal.disabled_at = principal.disabled_at or utcnow()
        await self._session.flush()
        return principal


class TokenRepository:
    """Issue, authenticate and revoke bearer tokens; stores SHA-256 digests only."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def issue(self, principal_id: uuid.UUID, label: str,
                    expires_in: dt.timedelta | None = None,
                    now: dt.datetime | None = None) -> IssuedToken:
        now = now or utcnow()
        token_id = uuid.uuid4()
        secret = secrets.token_urlsafe(TOKEN_SECRET_BYTES)
        record = ApiToken(
            id=token_id, principal_id=principal_id, secret_sha256=secret_digest(secret),
            label=label, created_at=now,
            expires_at=None if expires_in is None else now + expires_in,
        )
        await insert(self._session, f"token for principal {principal_id}", record)
        return IssuedToken(token=f"{TOKEN_PREFIX}{token_id.hex}_{secret}", record=record)

    async def authenticate(self, token: str, now: dt.datetime | None = None) -> Principal:
        """The principal owning ``token`` (:meth:`check`), its use recorded when due."""
        now = now or utcnow()
        checked = await self.check(token, now)
        if checked.touch_due:
            await self.touch(checked.token_id, now)
        return checked.principal

    async def touch(self, token_id: uuid.UUID, now: dt.datetime | None = None) -> None:
        """Record a use of the token now."""
        record = await self._session.get(ApiToken, token_id)
        if record is not None:
            record.last_used_at = now or utcnow()
            await self._session.flush()

    async def check(self, token: str, now: dt.datetime | None = None) -> TokenCheck:
        """The principal owning ``token``, or :class:`AuthenticationError` for any failure.

        Only reads; ``touch_due`` says whether :meth:`touch` should record this use.
        """
        now = now or utcnow()
        match = _TOKEN_RE.match(token)
        token_id = uuid.UUID(match.group(1)) if match else None
        digest = secret_digest(match.group(2) if match else "")
        record = None if token_id is None else await self._session.get(ApiToken, token_id)
        stored = record.secret_sha256 if record is not None else bytes(32)
        if not hmac.compare_digest(stored, digest) or record is None:
            raise AuthenticationError(_INVALID)
        if record.revoked_at is not None or (
                record.expires_at is not None and record.expires_at <= now):
            raise AuthenticationError(_INVALID)
        principal = await self._session.get(Principal, record.principal_id)
        if principal is None or principal.disabled_at is not None:
            raise AuthenticationError(_INVALID)
        last = record.last_used_at
        return TokenCheck(principal, record.id, last is None or now - last >= TOUCH_INTERVAL,
                          record.expires_at)

    async def revoke(self, token_id: uuid.UUID) -> None:
        record = await self._session.get(ApiToken, token_id)
        if record is None:
            raise NotFoundError(f"token {token_id} not found")
        record.revoked_at = record.revoked_at or utcnow()
        await self._session.flush()

    async def list_for(self, principal_id: uuid.UUID) -> list[ApiToken]:
        return list(await self._session.scalars(
            select(ApiToken).where(ApiToken.principal_id == principal_id)
            .order_by(ApiToken.created_at)
        ))
