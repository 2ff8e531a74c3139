"""What a subscription notification says, read from its body: never more than the numbers.

Backport IG (http://hl7.org/fhir/uv/subscriptions-backport/notifications.html): a
notification is a ``history`` Bundle whose first entry is the backport *SubscriptionStatus*,
on R4 a ``Parameters`` resource (profile ``backport-subscription-status-r4``) with the
parameters ``subscription``, ``topic``, ``status``, ``type`` (``handshake``, ``heartbeat``,
``event-notification``, ``query-status``, ``query-event``), ``events-since-subscription-start``
and one ``notification-event`` per event (parts ``event-number``, ``timestamp``, ``focus``,
``additional-context``); on R4B a ``SubscriptionStatus`` resource with the camelCase
elements. Both are read. ``Subscription/$status`` answers a ``searchset`` of the same
Parameters (``type`` ``query-status``), read by :func:`parse_status_bundle`.

Classic R4 rest-hook (http://hl7.org/fhir/R4/subscription.html#2.46.7.1): the server POSTs
to the endpoint with an empty body (no ``channel.payload``, which is what the connector asks
for) or the matching resource (a server that ignores that). Either is only a ping:
:data:`NotificationType.REST_HOOK`, no subscription id, no numbers. The resource is neither
kept nor logged.

Everything else is a :class:`NotificationError` (the receiver answers 400 with its text,
which names what is wrong, never a value from the body).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dic_connector.errors import DicError

#: a FHIR logical id (http://hl7.org/fhir/R4/datatypes.html#id)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
#: the most events one notification may list (a server batching more is misbehaving)
MAX_EVENTS = 10_000


class NotificationError(DicError):
    """A notification body that is not one the connector understands."""


class NotificationType(StrEnum):
    HANDSHAKE = "handshake"
    HEARTBEAT = "heartbeat"
    EVENT = "event-notification"
    QUERY_STATUS = "query-status"
    QUERY_EVENT = "query-event"
    #: a classic R4 rest-hook ping (empty body or a resource)
    REST_HOOK = "rest-hook"


@dataclass(frozen=True)
class Notification:
    """The numbers of one notification (no focus, no resource: those may name patients)."""

    type: NotificationType
    #: the Subscription's logical id (None: a classic ping)
    subscription: str | None = None
    #: the Subscription's status as the server reports it
    status: str | None = None
    #: ``events-since-subscription-start``
    events_since: int | None = None
    #: the ``event-number`` of each ``notification-event``
    events: tuple[int, ...] = ()

    @property
    def numbered(self) -> bool:
        return self.subscription is not None


def logical_id(reference: str) -> str:
    """``Subscription/abc``, ``https://fhir.example/fhir/Subscription/abc/_history/2``: ``abc``."""
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or parts[-2] != "Subscription" or not _ID.match(parts[-1]):
        raise NotificationError("the notification's subscription is not a reference to a "
                                "Subscription")
    return parts[-1]


def _count(value: Any, what: str) -> int:
    """An ``integer64`` as a JSON string (the backport's ``valueString`` on R4) or number."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise NotificationError(f"{what} is not a non-negative integer")


def _value(parameter: Mapping[str, Any]) -> Any:
    return next((v for k, v in parameter.items() if k.startswith("value")), None)


def _from_parameters(resource: Mapping[str, Any]) -> Notification:
    found: dict[str, Any] = {}
    events: list[int] = []
    parameters = resource.get("parameter")
    if not isinstance(parameters, list):
        raise NotificationError("the SubscriptionStatus Parameters have no 'parameter' list")
    for parameter in parameters:
        if not isinstance(parameter, Mapping):
            raise NotificationError("a SubscriptionStatus parameter is not an object")
        name = parameter.get("name")
        if name in ("notification-event", "notificationEvent"):
            raw_parts = parameter.get("part")
            parts: list[Any] = raw_parts if isinstance(raw_parts, list) else []
            numbers = [_value(p) for p in parts if isinstance(p, Mapping)
                       and p.get("name") in ("event-number", "eventNumber")]
            if len(numbers) != 1:
                raise NotificationError("a notification-event has no single event-number")
            events.append(_count(numbers[0], "an event-number"))
        elif isinstance(name, str):
            found[name] = _value(parameter)
    subscription = found.get("subscription")
    reference = subscription.get("reference") if isinstance(subscription, Mapping) else None
    since = found.get("events-since-subscription-start",
                      found.get("eventsSinceSubscriptionStart"))
    return _make(found.get("type"), reference, found.get("status"), since, events)


def _from_subscription_status(resource: Mapping[str, Any]) -> Notification:
    subscription = resource.get("subscription")
    reference = subscription.get("reference") if isinstance(subscription, Mapping) else None
    raw_events: Any = resource.get("notificationEvent") or []
    if not isinstance(raw_events, list):
        raise NotificationError("notificationEvent is not a list")
    events = [_count(e.get("eventNumber") if isinstance(e, Mapping) else None,
                     "an eventNumber") for e in raw_events]
    return _make(resource.get("type"), reference, resource.get("status"),
                 resource.get("eventsSinceSubscriptionStart"), events)


def _make(kind: Any, reference: Any, status: Any, since: Any, events: Sequence[int]
          ) -> Notification:
    try:
        ntype = NotificationType(kind)
    except ValueError:
        raise NotificationError("the notification's type is not handshake, heartbeat, "
                                "event-notification, query-status or query-event") from None
    if ntype is NotificationType.REST_HOOK:
        raise NotificationError("'rest-hook' is not a backport notification type")
    if not isinstance(reference, str):
        raise NotificationError("the notification names no subscription")
    if len(events) > MAX_EVENTS:
        raise NotificationError(f"the notification lists more than {MAX_EVENTS} events")
    count = None if since is None else _count(since, "events-since-subscription-start")
    if ntype is NotificationType.EVENT and not events:
        if count is None:
            raise NotificationError("an event-notification has neither event numbers nor "
                                    "events-since-subscription-start")
        events = [count]  # an 'empty' payload may list no event; the count is its number
    return Notification(ntype, logical_id(reference), status if isinstance(status, str)
                        else None, count, tuple(events))


def parse_status_resource(resource: Any) -> Notification:
    """A backport SubscriptionStatus (R4 ``Parameters`` or R4B ``SubscriptionStatus``)."""
    if not isinstance(resource, Mapping):
        raise NotificationError("the SubscriptionStatus is not a JSON object")
    if resource.get("resourceType") == "Parameters":
        return _from_parameters(resource)
    if resource.get("resourceType") == "SubscriptionStatus":
        return _from_subscription_status(resource)
    raise NotificationError("the first entry is not a SubscriptionStatus (Parameters)")


def parse_notification(body: bytes) -> Notification:
    """What the body a FHIR server POSTed to the receiver says (see the module docstring)."""
    if not body.strip():
        return Notification(NotificationType.REST_HOOK)
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise NotificationError("the body is not JSON") from None
    if not isinstance(doc, Mapping) or not isinstance(doc.get("resourceType"), str):
        raise NotificationError("the body is not a FHIR resource")
    if doc["resourceType"] != "Bundle":
        return Notification(NotificationType.REST_HOOK)  # a classic payload: not read
    entries = doc.get("entry")
    first = entries[0] if isinstance(entries, list) and entries else None
    resource = first.get("resource") if isinstance(first, Mapping) else None
    if doc.get("type") != "history" or not isinstance(resource, Mapping) or \
            resource.get("resourceType") not in ("Parameters", "SubscriptionStatus"):
        if isinstance(resource, Mapping) and resource.get("resourceType") in (
                "Parameters", "SubscriptionStatus"):
            raise NotificationError("a notification Bundle has type 'history'")
        return Notification(NotificationType.REST_HOOK)  # a classic payload Bundle: not read
    return parse_status_resource(resource)


def parse_status_bundle(doc: Any) -> list[Notification]:
    """The SubscriptionStatus entries of a ``Subscription/$status`` answer."""
    if not isinstance(doc, Mapping) or doc.get("resourceType") != "Bundle":
        raise NotificationError("the $status answer is not a Bundle")
    out = []
    for entry in doc.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, Mapping) else None
        if isinstance(resource, Mapping) and resource.get("resourceType") in (
                "Parameters", "SubscriptionStatus"):
            out.append(parse_status_resource(resource))
    return out
