"""The tables of one node's service database (SQLAlchemy 2 declarative, typed ``Mapped``).

Shares never appear here in clear: ``share_blobs`` hold AES-GCM ciphertext under a per-version
key that ``dataset_versions`` keeps only wrapped (see :mod:`dic_connector.trust.keyring`).
``results`` hold opened aggregates only; ``audit_log`` details never hold row-level values.

Identifiers are random UUIDs (not sequential, so they reveal nothing and do not collide
between the three nodes), except sites (a short slug from the deployment configuration),
subscriptions (the FHIR server's Subscription id) and audit entries (the chain position).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from dic_connector.node.store.base import Base, EnumText, UTCDateTime, utcnow
from dic_connector.node.store.enums import SubscriptionStatus, VersionState
from dic_connector.vocabulary import Decision, RequestStatus, Role

NAME_LENGTH = 200


def _created() -> Mapped[dt.datetime]:
    return mapped_column(UTCDateTime(), default=utcnow)


class Site(Base):
    """A hospital DIC contributing data; ``id`` is the slug from the deployment config."""

    __tablename__ = "sites"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[dt.datetime] = _created()


class Principal(Base):
    """Someone (or a peer node) who calls the API; data owners belong to exactly one site."""

    __tablename__ = "principals"
    __table_args__ = (
        CheckConstraint(
            "(role = 'data_owner' AND site_id IS NOT NULL) "
            "OR (role <> 'data_owner' AND site_id IS NULL)",
            name="site_iff_data_owner",
        ),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    role: Mapped[Role] = mapped_column(EnumText(Role))
    site_id: Mapped[str | None] = mapped_column(ForeignKey("sites.id"), index=True)
    #: Raw 32-byte Ed25519 public key that verifies this principal's approvals and requests.
    signing_public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = _created()
    disabled_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ApiToken(Base):
    """A bearer token ``<id>.<secret>``: only SHA-256(secret) is stored."""

    __tablename__ = "api_tokens"
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    principal_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("principals.id", ondelete="CASCADE"), index=True
    )
    secret_sha256: Mapped[bytes] = mapped_column(LargeBinary(32))
    label: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[dt.datetime] = _created()
    expires_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class Dataset(Base):
    """A named cohort table of one site; its content lives in versions."""

    __tablename__ = "datasets"
    __table_args__ = (UniqueConstraint("site_id", "name"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[dt.datetime] = _created()
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class DatasetVersion(Base):
    """One upload of a dataset: column manifest, row count, state, wrapped version key."""

    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "number"),
        Index(None, "dataset_id", "state"),
    )
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id"))
    #: 1, 2, 3, ... per dataset, in order of creation.
    number: Mapped[int] = mapped_column(Integer)
    state: Mapped[VersionState] = mapped_column(EnumText(VersionState))
    #: ``{"columns": [{"name": ..., "type": ..., ...}, ...]}``: the schema, never values.
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    row_count: Mapped[int] = mapped_column(BigInteger)
    #: Node key id that wraps the version key; both are NULL once the version is deleted.
    key_id: Mapped[str | None] = mapped_column(String(64))
    wrapped_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _created()
    #: When this node voted ready (``prepared``); kept after the commit or abort.
    prepared_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    committed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    deleted_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ShareBlob(Base):
    """This node's share pair of one column of one version, AES-GCM sealed."""

    __tablename__ = "share_blobs"
    version_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("dataset_versions.id", ondelete="CASCADE"), primary_key=True
    )
    column: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _created()


class Study(Base):
    """A research question under which a researcher submits analysis requests."""

    __tablename__ = "studies"
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("principals.id"), index=True)
    created_at: Mapped[dt.datetime] = _created()


class AnalysisRequest(Base):
    """One analysis (named, versioned recipe + parameters) over one or more datasets."""

    __tablename__ = "analysis_requests"
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    study_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("studies.id"), index=True)
    submitted_by: Mapped[uuid.UUID] = mapped_column(ForeignKey("principals.id"), index=True)
    analysis: Mapped[str] = mapped_column(String(100))
    analysis_version: Mapped[str] = mapped_column(String(32))
    #: Columns, filter predicate, grouping, thresholds: never values of rows.
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: The researcher's signed canonical JSON and Ed25519 signature (if signed).
    canonical_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes | None] = mapped_column(LargeBinary(64))
    status: Mapped[RequestStatus] = mapped_column(EnumText(RequestStatus), index=True)
    #: Why the status is what it is (names a node, rule or site; never a value).
    status_reason: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                    onupdate=utcnow)


class AnalysisRequestDataset(Base):
    """The datasets a request touches; the version is pinned when the computation starts."""

    __tablename__ = "analysis_request_datasets"
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_requests.id", ondelete="CASCADE"), primary_key=True
    )
    dataset_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("datasets.id"), primary_key=True,
                                                  index=True)
    version_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("dataset_versions.id"))


class Approval(Base):
    """A data owner's Ed25519-signed decision on one request, kept with the signed bytes."""

    __tablename__ = "approvals"
    __table_args__ = (UniqueConstraint("request_id", "site_id", "principal_id"),)
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_requests.id", ondelete="CASCADE"), index=True
    )
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"))
    principal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("principals.id"))
    decision: Mapped[Decision] = mapped_column(EnumText(Decision))
    canonical_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    signer_public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = _created()


class StandingPolicy(Base):
    """A data owner's signed standing approval: analyses, columns, min cell count, expiry."""

    __tablename__ = "standing_policies"
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    principal_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("principals.id"))
    #: Analysis names allowed; ``["*"]`` allows every catalogued analysis.
    analyses: Mapped[list[str]] = mapped_column(JSON)
    #: Column names that may be used; ``["*"]`` allows all columns.
    columns: Mapped[list[str]] = mapped_column(JSON)
    min_cell_count: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    canonical_payload: Mapped[str] = mapped_column(Text)
    signature: Mapped[bytes] = mapped_column(LargeBinary(64))
    signer_public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[dt.datetime] = _created()


class Result(Base):
    """The opened aggregates of a completed request (and which cells were suppressed)."""

    __tablename__ = "results"
    id: Mapped[uuid.UUID] = mapped_column(Uuid(), primary_key=True, default=uuid.uuid4)
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_requests.id", ondelete="CASCADE"), unique=True
    )
    aggregates: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _created()


class LedgerEntry(Base):
    """One release on the node's ledger (disclosure control across requests).

    Which typed columns a completed request read (``columns``), which cells it opened
    (``cells``, ``opened``; none for a mean or a median), over which contributing
    dataset versions (``contributors``, ``"<dataset id>/<version id>"`` in row order), and
    this node's share pair of every contributor's count in every cell, sealed like a share
    blob under a key of its own (wrapped by the node key). Later releases are checked against
    these sums under MPC (:mod:`dic_connector.node.analyses.ledger`); nothing here is opened.
    """

    __tablename__ = "release_ledger"
    request_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("analysis_requests.id"), primary_key=True)
    cells: Mapped[list[str]] = mapped_column(JSON)
    opened: Mapped[list[bool]] = mapped_column(JSON)
    contributors: Mapped[list[str]] = mapped_column(JSON)
    #: the typed columns the request read (the version lineage rule keys on them)
    columns: Mapped[list[str]] = mapped_column(JSON, default=list,
                                               server_default=text("'[]'"))
    key_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    nonce: Mapped[bytes] = mapped_column(LargeBinary(12))
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = _created()


class Subscription(Base):
    """A FHIR Subscription a site's connector listens to, with the last event processed."""

    __tablename__ = "subscriptions"
    id: Mapped[str] = mapped_column(String(NAME_LENGTH), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.id"), index=True)
    topic: Mapped[str] = mapped_column(String(500))
    status: Mapped[SubscriptionStatus] = mapped_column(EnumText(SubscriptionStatus))
    last_event_number: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow,
                                                    onupdate=utcnow)


class PeerMessage(Base):
    """A control message this node owes a peer node: the transactional outbox.

    Written in the same transaction as the change it announces (a request accepted, an
    approval stored, a dataset erased), so a change is never committed without its message
    or the reverse; delivered oldest first per peer by the replicator, each message retried
    on its own with backoff, then *parked* (a dead letter an admin can replay or drop; see
    :mod:`dic_connector.node.coordination.replication`). Bodies hold signed payloads and
    identifiers only, never row data or shares.
    """

    __tablename__ = "peer_outbox"
    __table_args__ = (Index("ix_peer_outbox_pending", "peer", "outcome", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: Index (0..2) of the node that must receive the message.
    peer: Mapped[int] = mapped_column(Integer)
    #: What it announces: ``request``, ``approval``, ``policy``, ``cancel``, ...
    kind: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(300))
    body: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = _created()
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    #: None while pending; ``delivered``, ``parked`` (refused by the peer, or given up on
    #: after the last retry: waits for an admin) or ``dropped`` (by an admin).
    outcome: Mapped[str | None] = mapped_column(String(16))
    #: Why the last attempt failed, or why the peer refused (no row data).
    last_error: Mapped[str | None] = mapped_column(String(500))
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    #: The HTTP status of the peer's last answer (None: nothing answered).
    peer_status: Mapped[int | None] = mapped_column(Integer)
    #: The title of the peer's last problem answer.
    problem_title: Mapped[str | None] = mapped_column(String(200))
    #: Why the message was parked: refused by the peer, or the retries ran out.
    parked_reason: Mapped[str | None] = mapped_column(String(500))
    #: ``refused`` (a 4xx), ``failed`` (retries used up on 5xx, 404 or timeouts) or
    #: ``unreachable`` (no connection through every retry: revived when the peer is back).
    park_cause: Mapped[str | None] = mapped_column(String(16))


class AuditEntry(Base):
    """One link of the hash chain (see :mod:`dic_connector.node.store.audit`)."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(100))
    object: Mapped[str] = mapped_column(String(300))
    #: Canonical JSON text exactly as hashed; identifiers and counts only, never row data.
    details: Mapped[str] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class PeerAuditHead(Base):
    """A peer node's audit chain head ``(seq, hash)`` as this node observed it.

    The newest row per peer is what the next exchange asks the peer to still hold
    (:mod:`dic_connector.node.store.peer_audit`); a bounded history of older rows is kept for
    the operator. Not part of this node's own chain: a head observed every minute would
    otherwise double the log.
    """

    __tablename__ = "peer_audit_heads"
    __table_args__ = (Index("ix_peer_audit_heads_peer", "peer", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    #: The peer's certificate name (``node-<i>``).
    peer: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    #: First and latest time the peer reported this head.
    first_seen_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    observed_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class PeerAuditMismatch(Base):
    """A peer whose chain no longer held the head this node recorded: truncation or rewrite.

    Open (``acknowledged_at`` None) until an operator acknowledges it; while a peer has an
    open mismatch this node agrees to no plan (every plan involves all three nodes).
    """

    __tablename__ = "peer_audit_mismatches"
    __table_args__ = (Index("ix_peer_audit_mismatches_open", "peer", "acknowledged_at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    peer: Mapped[str] = mapped_column(String(64))
    recorded_seq: Mapped[int] = mapped_column(BigInteger)
    recorded_hash: Mapped[str] = mapped_column(String(64))
    reported_seq: Mapped[int] = mapped_column(BigInteger)
    reported_hash: Mapped[str] = mapped_column(String(64))
    #: What the peer's chain holds at ``recorded_seq`` now (None: no entry there).
    hash_at_recorded: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(String(500))
    detected_at: Mapped[dt.datetime] = _created()
    acknowledged_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    acknowledged_by: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
