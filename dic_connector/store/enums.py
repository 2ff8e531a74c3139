"""The status vocabularies of the service, as ``StrEnum`` s stored by value.

Values are lowercase words that appear in the API and the audit log; never rename a value
without a data migration.
"""

from __future__ import annotations

from enum import StrEnum


class VersionState(StrEnum):
    """Lifecycle of a dataset version on one node (see ``datasets.DatasetVersionRepository``)."""

    #: Share blobs are arriving; invisible to analyses; may be cleaned up if abandoned.
    RECEIVING = "receiving"
    #: Every column arrived and the version was committed; analyses may read it.
    COMMITTED = "committed"
    #: Blobs and the version key are erased; only the tombstone row remains for the audit.
    DELETED = "deleted"


class Role(StrEnum):
    """What a principal may do; enforced by the API layer."""

    #: Submits analyses and reads aggregate results of their studies.
    RESEARCHER = "researcher"
    #: Approves analyses on, and deletes, the datasets of one site.
    DATA_OWNER = "data_owner"
    #: A peer compute node (authenticated by mutual TLS, tokens only for control calls).
    NODE = "node"
    #: Operates this node: principals, tokens, audit verification.
    ADMIN = "admin"


class RequestStatus(StrEnum):
    """Where an analysis request stands on this node."""

    #: Accepted by a node and stored; verification not yet done.
    SUBMITTED = "submitted"
    #: Waiting for the approval (or a matching standing policy) of every data owner involved.
    AWAITING_APPROVAL = "awaiting_approval"
    #: All approvals and the disclosure policy verified on this node.
    APPROVED = "approved"
    #: Approved here but at least one of the other two nodes is unreachable or has not agreed.
    WAITING_FOR_NODES = "waiting_for_nodes"
    #: The MPC computation is running on all three nodes.
    RUNNING = "running"
    #: The aggregates were opened and stored as a result.
    COMPLETED = "completed"
    #: A data owner denied it, or verification (signature, policy) refused it.
    REJECTED = "rejected"
    #: The computation or coordination failed; ``status_reason`` says where.
    FAILED = "failed"
    #: Withdrawn by the researcher before completion.
    CANCELLED = "cancelled"


#: Allowed status changes; terminal statuses have no successors.
REQUEST_TRANSITIONS: dict[RequestStatus, frozenset[RequestStatus]] = {
    RequestStatus.SUBMITTED: frozenset({
        RequestStatus.AWAITING_APPROVAL, RequestStatus.APPROVED, RequestStatus.REJECTED,
        RequestStatus.CANCELLED, RequestStatus.FAILED}),
    RequestStatus.AWAITING_APPROVAL: frozenset({
        RequestStatus.APPROVED, RequestStatus.REJECTED, RequestStatus.CANCELLED,
        RequestStatus.FAILED}),
    RequestStatus.APPROVED: frozenset({
        RequestStatus.RUNNING, RequestStatus.WAITING_FOR_NODES, RequestStatus.CANCELLED,
        RequestStatus.FAILED, RequestStatus.REJECTED}),
    RequestStatus.WAITING_FOR_NODES: frozenset({
        RequestStatus.RUNNING, RequestStatus.CANCELLED, RequestStatus.FAILED}),
    RequestStatus.RUNNING: frozenset({RequestStatus.COMPLETED, RequestStatus.FAILED}),
    RequestStatus.COMPLETED: frozenset(),
    RequestStatus.REJECTED: frozenset(),
    RequestStatus.FAILED: frozenset(),
    RequestStatus.CANCELLED: frozenset(),
}


class Decision(StrEnum):
    """A data owner's answer to one analysis request."""

    #: The owner allows this request on their site's data.
    APPROVE = "approve"
    #: The owner refuses; the request is rejected.
    DENY = "deny"


class SubscriptionStatus(StrEnum):
    """State of a FHIR R5 / Backport Subscription as seen by the connector."""

    #: Handshake not yet received.
    REQUESTED = "requested"
    #: Notifications arrive in order.
    ACTIVE = "active"
    #: A gap in event numbers was seen; a re-pull must recover before going active again.
    ERROR = "error"
    #: Switched off by the operator or the server.
    OFF = "off"


class EventOrder(StrEnum):
    """Where a notification's event number falls relative to the last one processed."""

    #: Already processed (event number <= last): ignore, notifications are idempotent.
    DUPLICATE = "duplicate"
    #: Exactly the next event.
    NEXT = "next"
    #: Events were missed: recover by re-pulling since the last known state.
    GAP = "gap"
