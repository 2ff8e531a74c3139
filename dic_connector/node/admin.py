"""Node administration behind the ``dic`` command: migrate, principals, tokens, audit, the
dead letters of the peer outbox (list, replay, drop), and the peers' audit heads as this node
recorded them (list; acknowledge a detected truncation or rewrite, which lets the node agree
to plans again: :mod:`dic_connector.node.coordination.exchange`).

Each function opens the node's store from its config, does one thing in one transaction
(audited), and closes the store.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from dic_connector.errors import ConfigError, NotFoundError
from dic_connector.node.config import NodeConfig
from dic_connector.node.store import migrate
from dic_connector.node.store.audit import ChainHead
from dic_connector.node.store.unit_of_work import Store
from dic_connector.trust.keyring import NodeKeyring, load_keyring
from dic_connector.trust.signing import parse_public_key
from dic_connector.vocabulary import Role
from mpc.errors import TlsConfigError
from mpc.tls import check_certificate

ADMIN_ACTOR = "admin:cli"


def node_keyring(config: NodeConfig) -> NodeKeyring:
    if config.keyring_file is None:
        raise ConfigError("Config 'keyring_file' is missing (run `dic node init` to create one)")
    keyring = load_keyring(config.keyring_file)
    if keyring.node_id != config.node_id:
        raise ConfigError(f"Config 'keyring_file' belongs to {keyring.node_id}, "
                          f"not {config.node_id}")
    return keyring


async def migrate_database(config: NodeConfig) -> str | None:
    await migrate.upgrade(config.database_url)
    return await migrate.current_revision(config.database_url)


@dataclass(frozen=True)
class NewPrincipal:
    name: str
    role: Role
    token: str | None


async def add_principal(config: NodeConfig, name: str, role: Role, site: str | None = None,
                        signing_key: str | None = None, issue_token: bool = True,
                        token_days: int | None = 90) -> NewPrincipal:
    """Create a principal (and its site, for a new data owner) and optionally a token.

    ``signing_key`` is the public key in any form :func:`parse_public_key` reads."""
    if signing_key is None and role in (Role.RESEARCHER, Role.DATA_OWNER):
        raise ConfigError(f"a {role.value} signs every request or approval: give their public "
                          "signing key (`dic keys new` makes one)")
    public = parse_public_key(signing_key) if signing_key else None
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.unit_of_work() as uow:
            if site is not None and site not in {s.id for s in await uow.sites.all()}:
                await uow.sites.add(site, site)
            principal = await uow.principals.create(name, role, site, public)
            token = None
            if issue_token:
                issued = await uow.tokens.issue(
                    principal.id, "cli", None if token_days is None else dt.timedelta(token_days))
                token = issued.token
            await uow.audit.append(ADMIN_ACTOR, "principal.create", f"principal:{principal.id}",
                                   {"name": name, "role": role.value, "site": site or ""})
            return NewPrincipal(name, role, token)
    finally:
        await store.close()


def check_serve(config: NodeConfig) -> None:
    """Refuse to serve a node that could never compute, or whose certificate breaks the
    deployment's rules (:func:`mpc.tls.check_certificate`); the message names the file."""
    if not config.coordinated and not config.standalone:
        raise ConfigError(
            f"{config.node_id} has no 'peers' and 'tls', so it could never compute. Give both "
            "(`dic node init --peers peers.yaml --pki DIR` writes them), or set "
            "'standalone: true' to serve the API alone.")
    if config.tls is not None:
        try:
            check_certificate(config.tls, config.node_id)
        except TlsConfigError as exc:
            raise ConfigError(f"Config 'tls': {exc}") from None


async def verify_audit(config: NodeConfig) -> tuple[bool, str]:
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.unit_of_work() as uow:
            result = await uow.audit.verify_chain()
    finally:
        await store.close()
    if result.broken_seq is None:
        return True, (f"{config.node_id}: audit chain intact, {result.entries} entries, "
                      f"head {result.head.seq}:{result.head.hash}")
    return False, (f"{config.node_id}: audit chain BROKEN at seq {result.broken_seq}: "
                   f"{result.reason}")


@dataclass(frozen=True)
class ParkedMessage:
    """A dead letter of the peer outbox, as ``dic admin outbox list`` shows it."""

    id: int
    peer: str
    kind: str
    method: str
    path: str
    attempts: int
    peer_status: int | None
    problem_title: str | None
    reason: str | None
    #: ``refused``, ``failed`` or ``unreachable`` (:mod:`dic_connector.node.store.outbox`).
    cause: str | None
    parked_at: dt.datetime | None

    def describe(self) -> str:
        status = "-" if self.peer_status is None else str(self.peer_status)
        when = "-" if self.parked_at is None else f"{self.parked_at:%Y-%m-%dT%H:%M:%SZ}"
        return (f"{self.id}\t{self.peer}\t{self.kind}\t{self.method} {self.path}\t"
                f"attempts {self.attempts}\tstatus {status} {self.problem_title or ''}\t"
                f"parked {when} ({self.cause or '-'}): {self.reason or ''}")


def _peer_name(config: NodeConfig, index: int) -> str:
    return config.peers[index].name if config.coordinated else f"node-{index}"


async def parked_messages(config: NodeConfig, peer: int | None = None) -> list[ParkedMessage]:
    """The outbox messages parked for an admin, oldest first (``peer``: one peer's only)."""
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.unit_of_work() as uow:
            return [ParkedMessage(m.id, _peer_name(config, m.peer), m.kind, m.method, m.path,
                                  m.attempts, m.peer_status, m.problem_title, m.parked_reason,
                                  m.park_cause, m.finished_at)
                    for m in await uow.outbox.parked(peer)]
    finally:
        await store.close()


async def settle_parked(config: NodeConfig, action: str, ids: list[int]) -> list[int]:
    """``replay`` (pending again, due now, attempts from zero: the running node delivers it
    within ``coordination_interval_s``) or ``drop`` the parked messages ``ids``, all in one
    audited transaction; a message that is not parked refuses the lot."""
    if action not in ("replay", "drop"):
        raise ConfigError(f"outbox action must be replay or drop, not {action!r}")
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.unit_of_work() as uow:
            for message_id in ids:
                message = await (uow.outbox.replay(message_id) if action == "replay"
                                 else uow.outbox.drop(message_id))
                await uow.audit.append(ADMIN_ACTOR, f"outbox.{action}", message.path,
                                       {"message": message_id, "kind": message.kind,
                                        "peer": _peer_name(config, message.peer)})
        return ids
    finally:
        await store.close()


@dataclass(frozen=True)
class PeerMismatch:
    """A detected truncation or rewrite of a peer's log, as ``dic admin audit peers`` shows it."""

    id: int
    recorded: ChainHead
    reported: ChainHead
    reason: str
    detected_at: dt.datetime

    def describe(self) -> str:
        return (f"  mismatch {self.id} at {self.detected_at:%Y-%m-%dT%H:%M:%SZ}: recorded "
                f"{self.recorded.seq}:{self.recorded.hash[:16]}, reported "
                f"{self.reported.seq}:{self.reported.hash[:16]}: {self.reason}")


@dataclass(frozen=True)
class PeerAuditStatus:
    """One peer's audit head as this node recorded it, and its unacknowledged mismatches."""

    peer: str
    head: ChainHead | None
    observed_at: dt.datetime | None
    mismatches: tuple[PeerMismatch, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.mismatches)

    def describe(self) -> str:
        head = "never observed" if self.head is None or self.observed_at is None else (
            f"head {self.head.seq}:{self.head.hash} observed "
            f"{self.observed_at:%Y-%m-%dT%H:%M:%SZ}")
        state = "FLAGGED" if self.flagged else "ok"
        return "\n".join([f"{self.peer}\t{state}\t{head}",
                          *(m.describe() for m in self.mismatches)])


def _peer_names(config: NodeConfig) -> list[str]:
    if not config.coordinated:
        raise ConfigError(f"{config.node_id} has no 'peers': there is no peer audit to show")
    return [p.name for i, p in enumerate(config.peers) if i != config.node_index]


async def peer_audit_status(config: NodeConfig) -> list[PeerAuditStatus]:
    """Each peer's recorded audit head and open mismatches (``dic admin audit peers``)."""
    names = _peer_names(config)
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.reading() as uow:
            out = []
            for name in names:
                observed = await uow.peer_audit.recorded(name)
                out.append(PeerAuditStatus(
                    name, None if observed is None else observed.head,
                    None if observed is None else observed.observed_at,
                    tuple(PeerMismatch(m.id, ChainHead(m.recorded_seq, m.recorded_hash),
                                       ChainHead(m.reported_seq, m.reported_hash), m.reason,
                                       m.detected_at)
                          for m in await uow.peer_audit.open_mismatches(name))))
            return out
    finally:
        await store.close()


async def acknowledge_peer_audit(config: NodeConfig, peer: str,
                                 actor: str = ADMIN_ACTOR) -> int:
    """Close ``peer``'s open mismatches after an operator has looked (audited as
    ``audit.peer_acknowledge``); the node agrees to plans again. The number closed."""
    if peer not in _peer_names(config):
        raise NotFoundError(f"{peer!r} is not a peer of {config.node_id} "
                            f"(peers: {', '.join(_peer_names(config))})")
    store = Store.open(config.database_url, node_keyring(config))
    try:
        async with store.unit_of_work() as uow:
            closed = await uow.peer_audit.acknowledge(peer, actor)
            if closed:
                await uow.audit.append(actor, "audit.peer_acknowledge", f"node:{peer}",
                                       {"peer": peer, "mismatches": [m.id for m in closed]})
            return len(closed)
    finally:
        await store.close()
