"""The node store's own state vocabularies, as ``StrEnum`` s stored by value.

The words shared with clients (roles, request states, decisions) are
:mod:`dic_connector.vocabulary`.

Values are lowercase words that appear in the API and the audit log; never rename a value
without a data migration.
"""

from __future__ import annotations

from enum import StrEnum


class VersionState(StrEnum):
    """Lifecycle of a dataset version on one node (see ``datasets.DatasetVersionRepository``)."""

    #: Share blobs are arriving; invisible to analyses; may be cleaned up if abandoned.
    RECEIVING = "receiving"
    #: Every column arrived and this node voted ready (phase one of the two-phase commit);
    #: still invisible to analyses, and never expired: only the outcome (commit or abort,
    #: from the connector or learnt from the peers) moves it on.
    PREPARED = "prepared"
    #: Every column arrived and the version was committed; analyses may read it.
    COMMITTED = "committed"
    #: Blobs and the version key are erased; only the tombstone row remains for the audit.
    DELETED = "deleted"


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
