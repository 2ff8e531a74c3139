"""Notification bodies as a backport server sends them (the shape of sekmet's and of the
IG's examples: R4 Parameters, kebab-case names, counts as ``valueString``), for the tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

BASE = "http://127.0.0.1:9/fhir"


def status(kind: str, since: int | str, events: Sequence[int] = (), sub: str = "s1",
           state: str = "active") -> dict[str, Any]:
    """A backport SubscriptionStatus; each event's focus names a (made-up) patient."""
    parameters: list[dict[str, Any]] = [
        {"name": "subscription", "valueReference": {"reference": f"{BASE}/Subscription/{sub}"}},
        {"name": "topic", "valueCanonical": "http://example.org/topic/patient-change"},
        {"name": "status", "valueCode": state},
        {"name": "type", "valueCode": kind},
        {"name": "events-since-subscription-start", "valueString": str(since)},
    ]
    for n in events:
        parameters.append({"name": "notification-event", "part": [
            {"name": "event-number", "valueString": str(n)},
            {"name": "timestamp", "valueInstant": "2026-12-02T14:00:00Z"},
            {"name": "focus", "valueReference": {"reference": f"{BASE}/Patient/secret-id-{n}"}}]})
    return {"resourceType": "Parameters", "parameter": parameters}


def bundle(kind: str, since: int | str, events: Sequence[int] = (), **kw: Any) -> bytes:
    """A notification Bundle (``history``, the SubscriptionStatus first)."""
    return json.dumps({"resourceType": "Bundle", "type": "history", "entry": [
        {"fullUrl": "urn:uuid:1", "resource": status(kind, since, events, **kw)}]}).encode()
