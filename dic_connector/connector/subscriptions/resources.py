"""The Subscription resources the connector keeps on a FHIR server, and how it knows its own.

Backport IG, "Subscriptions" (http://hl7.org/fhir/uv/subscriptions-backport/components.html
and StructureDefinition-backport-subscription): on R4 a topic-based subscription is a
``Subscription`` with ``meta.profile`` ``backport-subscription``, the topic canonical as
``criteria``, filters as ``backport-filter-criteria`` extensions on ``_criteria``, the payload
content (``empty`` or ``id-only``; never ``full-resource``) as ``backport-payload-content`` on
``channel._payload``, and the heartbeat period as ``backport-heartbeat-period`` on
``channel``. Classic R4 (http://hl7.org/fhir/R4/subscription.html): ``criteria`` is a search
and ``channel.payload`` is left out, so notifications carry no resource.

Both ask ``channel.type`` ``rest-hook`` to POST to the connector's receiver with the header
``Authorization: Bearer <shared secret>`` (``channel.header``), and start ``requested``: the
server activates them (after a handshake, for the backport).

An R4 Subscription has no ``identifier``; the connector marks its own with a ``meta.tag``
(:data:`TAG_SYSTEM`, code ``<site>.<dataset>``) and finds them with ``_tag``, so a restart
reuses the subscription instead of piling up new ones, and two connectors (or two datasets)
on one server keep theirs apart.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from dic_connector.connector.config import NOTIFY_HEADER, SubscriptionKind, SubscriptionTrigger

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition"
PROFILE = f"{BACKPORT}/backport-subscription"
EXT_FILTER = f"{BACKPORT}/backport-filter-criteria"
EXT_CONTENT = f"{BACKPORT}/backport-payload-content"
EXT_HEARTBEAT = f"{BACKPORT}/backport-heartbeat-period"
#: the tag that marks the connector's subscriptions (code: ``<site>.<dataset>``)
TAG_SYSTEM = "urn:dic-connector:subscription"
#: R4 Subscription.status values (http://hl7.org/fhir/R4/valueset-subscription-status.html)
ACTIVE, REQUESTED, ERROR, OFF = "active", "requested", "error", "off"


def tag_code(site: str, dataset: str) -> str:
    return f"{site}.{dataset}"


def desired(settings: SubscriptionTrigger, site: str, dataset: str) -> dict[str, Any]:
    """The Subscription the connector asks for (status ``requested``)."""
    channel: dict[str, Any] = {"type": "rest-hook", "endpoint": settings.endpoint,
                               "header": [f"{NOTIFY_HEADER}: Bearer {settings.secret}"]}
    resource: dict[str, Any] = {
        "resourceType": "Subscription",
        "meta": {"tag": [{"system": TAG_SYSTEM, "code": tag_code(site, dataset)}]},
        "status": REQUESTED,
        "reason": f"dic-connector {site}: re-pull dataset {dataset} when its data change",
        "channel": channel,
    }
    if settings.kind is SubscriptionKind.BACKPORT:
        assert settings.topic is not None
        resource["meta"]["profile"] = [PROFILE]
        resource["criteria"] = settings.topic
        if settings.filters:
            resource["_criteria"] = {"extension": [{"url": EXT_FILTER, "valueString": f}
                                                   for f in settings.filters]}
        channel["payload"] = "application/fhir+json"
        channel["_payload"] = {"extension": [{"url": EXT_CONTENT,
                                              "valueCode": settings.content}]}
        channel["extension"] = [{"url": EXT_HEARTBEAT,
                                 "valueUnsignedInt": max(1, round(settings.heartbeat_s))}]
    else:
        assert settings.criteria is not None
        resource["criteria"] = settings.criteria
    return resource


def _tagged(resource: Mapping[str, Any], code: str) -> bool:
    tags = (resource.get("meta") or {}).get("tag") or []
    return any(isinstance(t, Mapping) and t.get("system") == TAG_SYSTEM and t.get("code") == code
               for t in tags)


def ours(resource: Any, site: str, dataset: str) -> bool:
    """Whether ``resource`` is a Subscription this connector made for ``dataset``."""
    return isinstance(resource, Mapping) and resource.get("resourceType") == "Subscription" \
        and _tagged(resource, tag_code(site, dataset))


def matches(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether ``found`` on the server asks for what ``wanted`` does (status aside)."""
    for key in ("criteria", "_criteria"):
        if found.get(key) != wanted.get(key):
            return False
    channel = found.get("channel") or {}
    if any(channel.get(k) != v for k, v in wanted["channel"].items()):
        return False
    profiles = set((found.get("meta") or {}).get("profile") or [])
    return set(wanted["meta"].get("profile", [])) <= profiles


def requested(found: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """``found`` rewritten as ``wanted`` and ``requested`` again (the update that
    re-activates it), keeping its id and the tags and profiles others put on it (but not
    the backport profile when the config now asks for a classic rest-hook)."""
    out = copy.deepcopy(dict(wanted))
    out["id"] = found["id"]
    meta = found.get("meta") or {}
    tags = [t for t in meta.get("tag") or [] if t not in out["meta"]["tag"]]
    out["meta"]["tag"] = [*out["meta"]["tag"], *tags]
    profiles = [p for p in meta.get("profile") or []
                if p not in out["meta"].get("profile", []) and p != PROFILE]
    if profiles or "profile" in out["meta"]:
        out["meta"]["profile"] = [*out["meta"].get("profile", []), *profiles]
    out.pop("error", None)
    return out
