"""MII broad-consent-shaped Consent resources for the consent tests (profile
``mii-pr-consent-einwilligung``: root deny, nested coded permits/denies with periods)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dic_connector.connector.consent.policy import (
    MDAT_SCIENTIFIC_USE,
    MDAT_STORE_PROCESS,
    MII_POLICY_SYSTEM,
)

PROFILE = ("https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/"
           "mii-pr-consent-einwilligung")
MDAT_COLLECT = "2.16.840.1.113883.3.1937.777.24.5.3.6"
BIOMAT_COLLECT = "2.16.840.1.113883.3.1937.777.24.5.3.19"
MDAT = (MDAT_COLLECT, MDAT_STORE_PROCESS, MDAT_SCIENTIFIC_USE)

#: (type, codes, start, end) of one nested provision
Provision = tuple[str, Sequence[str], str | None, str | None]


def period(start: str | None, end: str | None) -> dict[str, str]:
    return {k: v for k, v in (("start", start), ("end", end)) if v is not None}


def consent(cid: str, patient: str | None, given: str | None, provisions: Sequence[Provision],
            *, status: str = "active", root: tuple[str | None, str | None] = ("2020-01-01",
                                                                              None),
            system: str = MII_POLICY_SYSTEM) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Consent", "id": cid, "meta": {"profile": [PROFILE]}, "status": status,
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "57016-8"}]},
                     {"coding": [{"system": "http://fhir.de/ConsentManagement/CodeSystem/"
                                            "ResultType", "code": "document"}]}],
        "policy": [{"uri": "urn:oid:2.16.840.1.113883.3.1937.777.24.2.1791"}],
        "provision": {"type": "deny", "period": period(*root), "provision": [
            {"type": kind, "period": period(start, end),
             "code": [{"coding": [{"system": system, "code": code}]} for code in codes]}
            for kind, codes, start, end in provisions]}}
    if patient is not None:
        resource["patient"] = {"reference": f"Patient/{patient}"}
    if given is not None:
        resource["dateTime"] = given
    return resource


def broad(cid: str, patient: str, given: str = "2024-02-23T12:00:00+01:00",
          end: str | None = "2054-01-31", **kw: Any) -> dict[str, Any]:
    """A full broad consent: every MDAT policy permitted from ``given``'s day to ``end``."""
    return consent(cid, patient, given, [("permit", [code], given[:10], end) for code in MDAT],
                   root=(given[:10], end), **kw)


def withdrawal(cid: str, patient: str, given: str, codes: Sequence[str] = MDAT,
               **kw: Any) -> dict[str, Any]:
    """A Widerruf: a later consent denying ``codes`` from ``given``'s day on."""
    return consent(cid, patient, given, [("deny", codes, given[:10], None)],
                   root=(given[:10], None), **kw)
