"""Reading notifications: backport Parameters (as sekmet and the IG's examples send them),
R4B SubscriptionStatus, classic rest-hook pings, ``$status`` answers, and malformed bodies
refused with what is wrong (never a value from the body)."""

from __future__ import annotations

import json

import pytest

from dic_connector.connector.subscriptions.notifications import (
    Notification,
    NotificationError,
    NotificationType,
    logical_id,
    parse_notification,
    parse_status_bundle,
)
from tests.dic_connector.connector.subscriptions.bodies import BASE, bundle, status


def test_backport_event_notification_gives_numbers_only() -> None:
    got = parse_notification(bundle("event-notification", 7, [6, 7]))
    assert got == Notification(NotificationType.EVENT, "s1", "active", 7, (6, 7))
    assert "secret-id" not in repr(got)  # the focus (a patient) is not kept


def test_handshake_heartbeat_and_an_empty_payload_without_events() -> None:
    assert parse_notification(bundle("handshake", 0, state="requested")) == Notification(
        NotificationType.HANDSHAKE, "s1", "requested", 0, ())
    assert parse_notification(bundle("heartbeat", 12)).events_since == 12
    # 'empty' content may list no notification-event: the count is the event's number
    assert parse_notification(bundle("event-notification", 3)).events == (3,)


def test_r4b_subscription_status_and_integer_counts() -> None:
    body = {"resourceType": "Bundle", "type": "history", "entry": [{"resource": {
        "resourceType": "SubscriptionStatus", "type": "event-notification", "status": "active",
        "subscription": {"reference": "Subscription/abc"}, "eventsSinceSubscriptionStart": 4,
        "notificationEvent": [{"eventNumber": 4}]}}]}
    assert parse_notification(json.dumps(body).encode()) == Notification(
        NotificationType.EVENT, "abc", "active", 4, (4,))


def test_classic_rest_hook_pings() -> None:
    assert parse_notification(b"") == Notification(NotificationType.REST_HOOK)
    patient = {"resourceType": "Patient", "id": "p1", "birthDate": "1950-01-01"}
    assert parse_notification(json.dumps(patient).encode()) == Notification(
        NotificationType.REST_HOOK)


@pytest.mark.parametrize(("body", "message"), [
    (b"{not json", "not JSON"),
    (b"[1, 2]", "not a FHIR resource"),
    (bundle("event-notification", "seven", [1]), "events-since-subscription-start is not"),
    (bundle("event-notification", 2, [-1]), "event-number is not"),
    (bundle("tickle", 2), "type is not handshake"),
    (bundle("heartbeat", 2, sub="../../etc"), "not a reference to a Subscription"),
    (json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [
        {"resource": status("heartbeat", 1)}]}).encode(), "type 'history'"),
    (json.dumps({"resourceType": "Bundle", "type": "history", "entry": [
        {"resource": {"resourceType": "Parameters", "parameter": [
            {"name": "type", "valueCode": "heartbeat"}]}}]}).encode(), "names no subscription"),
])
def test_malformed_bodies_are_refused_with_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(NotificationError, match=message) as caught:
        parse_notification(body)
    assert "secret-id" not in str(caught.value)


def test_status_bundle_and_references() -> None:
    answer = {"resourceType": "Bundle", "type": "searchset", "entry": [
        {"resource": status("query-status", 9, sub="a")},
        {"resource": {"resourceType": "OperationOutcome"}}]}
    [got] = parse_status_bundle(answer)
    assert (got.type, got.subscription, got.events_since) == (NotificationType.QUERY_STATUS,
                                                               "a", 9)
    assert logical_id(f"{BASE}/Subscription/x-1/_history/3") == "x-1"
    with pytest.raises(NotificationError):
        parse_status_bundle({"resourceType": "OperationOutcome"})
