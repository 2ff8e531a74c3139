"""The words of the control API that nodes and their clients share: roles, request states,
decisions.

They appear in API bodies, the audit log and the nodes' databases as these lowercase values
(``StrEnum`` s stored by value); never rename a value without a data migration. Storage-only
states (dataset versions) live in :mod:`dic_connector.node.store.enums`.
"""

from __future__ import annotations

from enum import StrEnum


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
#: Statuses a request never leaves (no successor in ``REQUEST_TRANSITIONS``).
ENDED_STATUSES: frozenset[RequestStatus] = frozenset(
    status for status, successors in REQUEST_TRANSITIONS.items() if not successors)


class Decision(StrEnum):
    """A data owner's answer to one analysis request."""

    #: The owner allows this request on their site's data.
    APPROVE = "approve"
    #: The owner refuses; the request is rejected.
    DENY = "deny"
