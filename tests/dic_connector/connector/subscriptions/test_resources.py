"""The Subscription resources asked for: backport and classic shapes, the tag that finds
them, what counts as the same definition, and the rewrite that re-activates one."""

from __future__ import annotations

from dic_connector.connector.config import SubscriptionKind, SubscriptionTrigger
from dic_connector.connector.subscriptions import resources

SECRET = "x" * 20


def backport(**kw: object) -> SubscriptionTrigger:
    return SubscriptionTrigger(**{  # type: ignore[arg-type]
        "kind": SubscriptionKind.BACKPORT, "endpoint": "http://c/fhir-notify/d",
        "secret": SECRET, "topic": "http://t/topic", "filters": ("Patient?identifier=a|",),
        "heartbeat_s": 90.0, **kw})


def test_backport_subscription() -> None:
    wanted = resources.desired(backport(), "tm", "d")
    assert wanted["status"] == "requested" and wanted["criteria"] == "http://t/topic"
    assert wanted["meta"]["profile"] == [resources.PROFILE]
    assert wanted["_criteria"]["extension"] == [{"url": resources.EXT_FILTER,
                                                 "valueString": "Patient?identifier=a|"}]
    channel = wanted["channel"]
    assert channel["header"] == [f"Authorization: Bearer {SECRET}"]
    assert channel["_payload"]["extension"][0]["valueCode"] == "empty"
    assert channel["extension"] == [{"url": resources.EXT_HEARTBEAT, "valueUnsignedInt": 90}]
    assert resources.ours(wanted, "tm", "d") and not resources.ours(wanted, "tr", "d")


def test_classic_rest_hook_has_no_payload() -> None:
    wanted = resources.desired(SubscriptionTrigger(
        SubscriptionKind.REST_HOOK, "http://c/n/d", SECRET, criteria="Patient?gender=female"),
        "tm", "d")
    assert wanted["criteria"] == "Patient?gender=female" and "payload" not in wanted["channel"]
    assert "profile" not in wanted["meta"]


def test_same_definition_and_the_rewrite() -> None:
    wanted = resources.desired(backport(), "tm", "d")
    stored = {**wanted, "id": "s1", "status": "error", "error": "delivery failed",
              "meta": {**wanted["meta"], "versionId": "3",
                       "tag": [*wanted["meta"]["tag"], {"system": "other", "code": "k"}]}}
    assert resources.matches(stored, wanted)  # status aside
    assert not resources.matches(stored, resources.desired(backport(secret="y" * 20), "tm", "d"))
    assert not resources.matches(stored, resources.desired(backport(filters=()), "tm", "d"))
    again = resources.requested(stored, wanted)
    assert again["id"] == "s1" and again["status"] == "requested" and "error" not in again
    assert {"system": "other", "code": "k"} in again["meta"]["tag"]
    # rewritten as a classic rest-hook: the backport profile goes
    classic = resources.desired(SubscriptionTrigger(
        SubscriptionKind.REST_HOOK, "http://c/n/d", SECRET, criteria="Patient?"), "tm", "d")
    assert resources.PROFILE not in resources.requested(stored, classic)["meta"].get(
        "profile", [])
