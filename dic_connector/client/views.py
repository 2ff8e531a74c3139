"""What the nodes answer, as typed read-only values.

One class per response schema of :mod:`dic_connector.node.api.schemas` that a person reads:
the analyses catalogue, studies, analysis requests (with their approvals), results, datasets,
policies and the audit reports. Each has ``from_json``, which reads the JSON body the node sent and raises
``KeyError``, ``TypeError`` or ``ValueError`` when it does not fit; :class:`~.node.NodeClient`
turns those into an :class:`~dic_connector.errors.ApiError` naming the call, so a caller
never handles a half-read body.

Ids stay the strings the API uses (UUIDs in canonical form): they go back into paths and
signed payloads unchanged. Timestamps become aware :class:`datetime.datetime` values, and
statuses and decisions the enums of :mod:`dic_connector.vocabulary`, so a status is compared
with ``RequestStatus.COMPLETED`` (or, being a ``StrEnum``, with ``"completed"``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dic_connector.vocabulary import ENDED_STATUSES, Decision, RequestStatus

Json = Mapping[str, Any]

#: Statuses a request never leaves (no successor in ``REQUEST_TRANSITIONS``).
ENDED: frozenset[RequestStatus] = ENDED_STATUSES


def timestamp(text: str) -> dt.datetime:
    """An API timestamp (ISO 8601, ``...Z``) as an aware datetime."""
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return value


@dataclass(frozen=True)
class AnalysisInfo:
    """One entry of the analyses catalogue: what it computes and exactly what it opens."""

    name: str
    version: str
    summary: str
    discloses: str
    parameters_schema: dict[str, Any]

    @classmethod
    def from_json(cls, data: Json) -> AnalysisInfo:
        return cls(str(data["name"]), str(data["version"]), str(data["summary"]),
                   str(data["discloses"]), dict(data["parameters_schema"]))


@dataclass(frozen=True)
class Study:
    """A researcher's study: the container requests are submitted in."""

    id: str
    title: str
    description: str
    created_at: dt.datetime

    @classmethod
    def from_json(cls, data: Json) -> Study:
        return cls(str(data["id"]), str(data["title"]), str(data["description"]),
                   timestamp(data["created_at"]))


@dataclass(frozen=True)
class Approval:
    """One site's signed decision on a request, as the node recorded it."""

    site: str
    decision: Decision
    created_at: dt.datetime

    @classmethod
    def from_json(cls, data: Json) -> Approval:
        return cls(str(data["site"]), Decision(data["decision"]), timestamp(data["created_at"]))


@dataclass(frozen=True)
class AnalysisRequest:
    """An analysis request as one node sees it; nodes may differ while it replicates."""

    id: str
    study_id: str
    analysis: str
    analysis_version: str
    parameters: dict[str, Any]
    datasets: tuple[str, ...]
    sites: tuple[str, ...]
    status: RequestStatus
    status_reason: str | None
    approvals: tuple[Approval, ...]
    created_at: dt.datetime
    updated_at: dt.datetime

    @property
    def ended(self) -> bool:
        """Whether the request is in a status it never leaves."""
        return self.status in ENDED

    @classmethod
    def from_json(cls, data: Json) -> AnalysisRequest:
        reason = data["status_reason"]
        return cls(
            str(data["id"]), str(data["study_id"]), str(data["analysis"]),
            str(data["analysis_version"]), dict(data["parameters"]),
            tuple(str(d) for d in data["datasets"]), tuple(str(s) for s in data["sites"]),
            RequestStatus(data["status"]), None if reason is None else str(reason),
            tuple(Approval.from_json(a) for a in data["approvals"]),
            timestamp(data["created_at"]), timestamp(data["updated_at"]))


@dataclass(frozen=True)
class Result:
    """The aggregates one node opened for a completed request (their shape is the
    analysis's: ``n``, ``median``, ``levels``, ...)."""

    request_id: str
    aggregates: dict[str, Any]
    created_at: dt.datetime

    @classmethod
    def from_json(cls, data: Json) -> Result:
        return cls(str(data["request_id"]), dict(data["aggregates"]),
                   timestamp(data["created_at"]))


@dataclass(frozen=True)
class DatasetVersion:
    """A committed version of a dataset: what a researcher needs to phrase a request."""

    id: str
    number: int
    row_count: int
    columns: tuple[str, ...]
    committed_at: dt.datetime

    @classmethod
    def from_json(cls, data: Json) -> DatasetVersion:
        return cls(str(data["id"]), int(data["number"]), int(data["row_count"]),
                   tuple(str(c) for c in data["columns"]), timestamp(data["committed_at"]))


@dataclass(frozen=True)
class Dataset:
    """A site's dataset (metadata only); ``latest_version`` None until one is committed."""

    id: str
    site: str
    name: str
    latest_version: DatasetVersion | None

    @classmethod
    def from_json(cls, data: Json) -> Dataset:
        latest = data["latest_version"]
        return cls(str(data["id"]), str(data["site"]), str(data["name"]),
                   None if latest is None else DatasetVersion.from_json(latest))


@dataclass(frozen=True)
class Policy:
    """A data owner's standing approval of a class of analyses, until it expires."""

    id: str
    site: str
    analyses: tuple[str, ...]
    columns: tuple[str, ...]
    min_cell_count: int
    expires_at: dt.datetime
    created_at: dt.datetime
    #: the cell-key perturbation it asks for, as signed (None: none)
    perturbation: dict[str, Any] | None = None
    #: the settings it tightens (None: the deployment's)
    min_subset_size: int | None = None
    max_levels: int | None = None
    #: True: it forces the release ledger on
    ledger: bool | None = None

    @classmethod
    def from_json(cls, data: Json) -> Policy:
        noise = data.get("perturbation")

        def number(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        ledger = data.get("ledger")
        return cls(str(data["id"]), str(data["site"]), tuple(str(a) for a in data["analyses"]),
                   tuple(str(c) for c in data["columns"]), int(data["min_cell_count"]),
                   timestamp(data["expires_at"]), timestamp(data["created_at"]),
                   dict(noise) if isinstance(noise, dict) else None,
                   number("min_subset_size"), number("max_levels"),
                   ledger if isinstance(ledger, bool) else None)


@dataclass(frozen=True)
class AuditHead:
    """Where a node's audit chain stands: its newest entry's sequence number and hash."""

    seq: int
    hash: str

    @classmethod
    def from_json(cls, data: Json) -> AuditHead:
        return cls(int(data["seq"]), str(data["hash"]))


@dataclass(frozen=True)
class AuditVerification:
    """A node's recomputation of its whole audit chain."""

    node: str
    ok: bool
    entries: int
    head: AuditHead
    broken_seq: int | None
    reason: str | None

    @classmethod
    def from_json(cls, data: Json) -> AuditVerification:
        broken, reason = data["broken_seq"], data["reason"]
        return cls(str(data["node"]), bool(data["ok"]), int(data["entries"]),
                   AuditHead.from_json(data["head"]), None if broken is None else int(broken),
                   None if reason is None else str(reason))


@dataclass(frozen=True)
class NodeAttestation:
    """One node's part of an audit comparison: its chain check against the head it reported
    when the three agreed, and the digest of the result it opened."""

    chain_ok: bool
    reason: str
    status: str
    result_sha256: str | None
    head_at_start: AuditHead | None

    @classmethod
    def from_json(cls, data: Json) -> NodeAttestation:
        digest, head = data.get("result_sha256"), data.get("head_at_start")
        return cls(bool(data["chain_ok"]), str(data.get("reason", "")),
                   str(data.get("status", "")), None if digest is None else str(digest),
                   None if head is None else AuditHead.from_json(head))


@dataclass(frozen=True)
class AuditComparison:
    """Every node's attestation for one computed request; ``consistent`` only when every
    chain holds and all opened the same result."""

    request_id: str
    consistent: bool
    nodes: dict[str, NodeAttestation]

    @classmethod
    def from_json(cls, data: Json) -> AuditComparison:
        return cls(str(data["request_id"]), bool(data["consistent"]),
                   {str(name): NodeAttestation.from_json(entry)
                    for name, entry in data["nodes"].items()})


@dataclass(frozen=True)
class PeerMismatch:
    """A peer's log found shorter or different than a head recorded earlier (truncated or
    rewritten): open until an operator acknowledges it (``dic admin audit acknowledge``)."""

    recorded: AuditHead
    reported: AuditHead
    reason: str
    detected_at: dt.datetime

    @classmethod
    def from_json(cls, data: Json) -> PeerMismatch:
        return cls(AuditHead(int(data["recorded_seq"]), str(data["recorded_hash"])),
                   AuditHead(int(data["reported_seq"]), str(data["reported_hash"])),
                   str(data["reason"]), timestamp(str(data["detected_at"])))


@dataclass(frozen=True)
class PeerAudit:
    """One peer's audit log as a node witnessed it in the periodic exchange: the newest head
    it recorded (None before the first exchange), the open mismatches, and how the
    exchanges went since the node started."""

    peer: str
    head: AuditHead | None
    observed_at: dt.datetime | None
    mismatches: tuple[PeerMismatch, ...]
    exchanges: int
    unreachable: int
    last_error: str

    @property
    def flagged(self) -> bool:
        """An open mismatch: the node agrees to no plan until it is acknowledged."""
        return bool(self.mismatches)

    @classmethod
    def from_json(cls, peer: str, data: Json) -> PeerAudit:
        head = data["head"]
        return cls(peer, None if head is None else AuditHead.from_json(head),
                   None if head is None else timestamp(str(head["observed_at"])),
                   tuple(PeerMismatch.from_json(m) for m in data["mismatches"]),
                   int(data["exchanges"]), int(data["unreachable"]),
                   str(data.get("last_error") or ""))


@dataclass(frozen=True)
class PeerAudits:
    """What one node witnessed of its peers' audit logs (``GET /v1/audit/peers``); no
    peers for a standalone node."""

    node: str
    peers: dict[str, PeerAudit]

    @property
    def flagged(self) -> list[str]:
        """The peers with an open mismatch."""
        return [name for name, peer in self.peers.items() if peer.flagged]

    @classmethod
    def from_json(cls, data: Json) -> PeerAudits:
        return cls(str(data["node"]), {str(name): PeerAudit.from_json(str(name), entry)
                                       for name, entry in data["peers"].items()})
