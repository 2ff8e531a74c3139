"""Per patient, whether their FHIR ``Consent`` resources permit the required policies *now*.

An MII broad consent (profile ``mii-pr-consent-einwilligung``,
https://www.medizininformatik-initiative.de/fhir/modul-consent/StructureDefinition/mii-pr-consent-einwilligung;
source ``input/fsh/profiles/MII_PR_Consent_Einwilligung.fsh`` of
github.com/medizininformatik-initiative/kerndatensatzmodul-consent) is a ``Consent`` with
``status``, ``patient``, ``dateTime`` (when it was given, 1..1), a root ``provision`` of
``type`` deny with its ``period``, and nested ``provision.provision`` elements, each with a
``type`` (permit / deny), a ``period`` and ``code`` from the MII policy CodeSystem. A
withdrawal (*Widerruf*) is a further Consent whose nested provisions deny the withdrawn
policies, and/or the earlier Consent set to ``inactive`` (HL7 Consent Management, revoke use
case: "the state of the consent is marked as inactive",
https://build.fhir.org/ig/HL7/fhir-consent-management/revoke.html).

The rules, evaluated for one instant ``at`` and each required code:

1. **All** consents of the patient count, not only the newest (MII module consent,
   ``input/pagecontent/enforcement.md``: merge the permits per policy code, subtract the
   denies, also those of withdrawal-only resources, then test the instant).
2. They are applied **oldest to newest by** ``Consent.dateTime``: a permit adds its period, a
   deny removes its period (TORCH, the MII extraction tool that enforcement page names,
   https://medizininformatik-initiative.github.io/torch/implementation/consent.html §2.5). So
   a later re-consent permits again, and a later withdrawal wins over an earlier consent.
   Evaluated at one instant this is: among the provisions naming the code whose periods
   contain ``at``, the one of the newest consent decides; **at equal** ``dateTime`` **deny
   wins**.
3. ``status`` (R4 ConsentState, https://hl7.org/fhir/R4/valueset-consent-state-codes.html):
   ``active`` consents apply as written. ``inactive`` ("terminated or replaced") and
   ``rejected`` consents permit nothing: their permits for ``at`` count as denies (a
   withdrawal), their denies still apply. ``draft``, ``proposed`` and ``entered-in-error``
   consents are not in force and are ignored.
4. A provision applies where ``at`` lies in its own period and in every enclosing
   provision's period. Period bounds are inclusive at their precision (R4 Period,
   https://hl7.org/fhir/R4/datatypes.html#Period): an end of ``2054-01-31`` covers that whole
   day. Dates without a time zone are read as UTC. A provision without ``type`` takes its
   parent's. Codes match by ``system`` and ``code`` in ``provision.code[].coding``. A deny
   with neither codes nor nested provisions denies every code (a blanket withdrawal).
5. A consent that cannot be read (no status, no or a bad ``dateTime``, a bad period, a
   provision of unknown type) makes its patient's decision ``malformed`` unless a valid
   deny decides anyway; under both modes a malformed consent excludes, never permits. A
   consent without a ``Patient/<id>`` reference cannot be attributed and is only counted.

Patient keys are the ids of ``Consent.patient.reference`` (``Patient/<id>``, also as an
absolute URL or with ``/_history/``). Nothing here raises on bad data, and no decision
carries a value of the resource: only outcome and reason codes and counts.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from dic_connector.connector.consent.policy import ConsentPolicy

_DATE = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_PATIENT = re.compile(r"(?:^|/)Patient/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
_APPLIED = {"active"}
_WITHDRAWN = {"inactive": "withdrawn", "rejected": "rejected"}
_NOT_IN_FORCE = {"draft", "proposed", "entered-in-error"}


class ConsentOutcome(StrEnum):
    """What a patient's consents say about the required codes at the evaluation time."""

    #: an applicable consent permits every required code
    PERMITTED = "permitted"
    #: a deny (or a withdrawn permit) decides at least one required code
    DENIED = "denied"
    #: nothing permits or denies some required code
    NO_CONSENT = "no_consent"
    #: a consent of the patient could not be read, and no valid deny decides
    MALFORMED = "malformed"


class ConsentReason(StrEnum):
    """Why: a code for logs and counts, never free text."""

    PERMITTED = "permitted"
    #: a deny provision for a required code covers the evaluation time
    DENIED = "denied"
    #: an ``inactive`` consent's permit covers it (consent withdrawn)
    WITHDRAWN = "withdrawn"
    #: a ``rejected`` consent's permit covers it
    REJECTED = "rejected"
    #: permits for a required code exist, but none covers the evaluation time
    OUTSIDE_PERIOD = "outside_period"
    #: no provision of the patient's consents names some required code
    NO_PROVISION = "no_provision"
    #: the patient's consents are all draft, proposed or entered-in-error
    NOT_IN_FORCE = "not_in_force"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class ConsentDecision:
    """The decision for one patient; ``consents`` counts their consents, ``malformed`` the
    unreadable ones among them."""

    outcome: ConsentOutcome
    reason: ConsentReason
    consents: int = 0
    malformed: int = 0

    @property
    def permits(self) -> bool:
        return self.outcome is ConsentOutcome.PERMITTED


@dataclass(frozen=True)
class ConsentEvaluation:
    """Decisions by patient key, and the consents no patient could be found for."""

    decisions: dict[str, ConsentDecision] = field(default_factory=dict)
    #: consents without a usable ``Patient/<id>`` reference (or that are not objects)
    unattributed: int = 0


class _Malformed(Exception):
    """A consent cannot be read (internal: becomes a counted problem, never escapes)."""


def patient_key(reference: Any) -> str | None:
    """The Patient id of a reference (``Patient/<id>``, absolute, or versioned), else None."""
    if not isinstance(reference, str):
        return None
    match = _PATIENT.search(reference)
    return match.group(1) if match else None


def bounds(value: Any) -> tuple[datetime, datetime]:
    """``[first, past-the-last)`` instant of a FHIR date/dateTime at its precision."""
    if not isinstance(value, str):
        raise _Malformed
    match = _DATE.fullmatch(value)
    try:
        if match is None:
            instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if "T" not in value or instant.tzinfo is None:
                raise _Malformed
            return instant, instant + timedelta(microseconds=1)
        year, month, day = (int(part) if part else None for part in match.groups())
        assert year is not None
        if month is None:
            return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
        if day is None:
            start = datetime(year, month, 1, tzinfo=UTC)
            return start, start + timedelta(days=calendar.monthrange(year, month)[1])
        start = datetime(year, month, day, tzinfo=UTC)
        return start, start + timedelta(days=1)
    except (ValueError, OverflowError):
        raise _Malformed from None


def _covers(period: Any, at: datetime) -> bool:
    if period is None:
        return True
    if not isinstance(period, Mapping):
        raise _Malformed
    start, end = period.get("start"), period.get("end")
    low = bounds(start)[0] if start is not None else None
    high = bounds(end)[1] if end is not None else None
    if low is not None and high is not None and high <= low:
        raise _Malformed
    return (low is None or low <= at) and (high is None or at < high)


def _codes(provision: Mapping[str, Any], system: str) -> set[str]:
    concepts = provision.get("code", [])
    if not isinstance(concepts, list):
        raise _Malformed
    out: set[str] = set()
    for concept in concepts:
        codings = concept.get("coding", []) if isinstance(concept, Mapping) else None
        if not isinstance(codings, list):
            raise _Malformed
        out |= {c["code"] for c in codings if isinstance(c, Mapping)
                and c.get("system") == system and isinstance(c.get("code"), str)}
    return out


@dataclass(frozen=True)
class _Effect:
    """A provision naming ``code``: its type, whether its periods cover ``at``."""

    code: str | None  # None: a blanket deny (every code)
    deny: bool
    covers: bool


def _effects(provision: Any, parent_type: str | None, parent_covers: bool,
             policy: ConsentPolicy, at: datetime) -> Iterator[_Effect]:
    if not isinstance(provision, Mapping):
        raise _Malformed
    kind = provision.get("type", parent_type)
    covers = _covers(provision.get("period"), at) and parent_covers
    nested = provision.get("provision", [])
    if not isinstance(nested, list):
        raise _Malformed
    codes = _codes(provision, policy.system)
    if codes or (not nested and "code" not in provision and kind == "deny"):
        if kind not in ("permit", "deny"):
            raise _Malformed
        for code in sorted(codes & set(policy.required_codes)) if codes else [None]:
            yield _Effect(code, kind == "deny", covers)
    for child in nested:
        yield from _effects(child, kind, covers, policy, at)


@dataclass(frozen=True)
class _Read:
    """One readable consent in force: when it was given, how its permits count, effects."""

    given: datetime
    withdrawn: ConsentReason | None
    effects: tuple[_Effect, ...]


def _read(consent: Mapping[str, Any], policy: ConsentPolicy, at: datetime) -> _Read | None:
    """The consent's effects, None when it is not in force; raises _Malformed."""
    status = consent.get("status")
    if status in _NOT_IN_FORCE:
        return None
    if status not in _APPLIED and status not in _WITHDRAWN:
        raise _Malformed
    given = bounds(consent.get("dateTime"))[0]
    provision = consent.get("provision")
    effects = tuple(_effects(provision, None, True, policy, at)) if provision is not None else ()
    withdrawn = ConsentReason(_WITHDRAWN[status]) if status in _WITHDRAWN else None
    return _Read(given, withdrawn, effects)


def _decide(reads: list[_Read], seen: int, malformed: int, policy: ConsentPolicy
            ) -> ConsentDecision:
    decided: dict[str, tuple[tuple[datetime, bool], ConsentReason]] = {}
    permits_elsewhere: set[str] = set()
    for read in reads:
        for effect in read.effects:
            targets = [effect.code] if effect.code is not None else list(policy.required_codes)
            deny = effect.deny or read.withdrawn is not None
            if not effect.covers:
                if not deny:
                    permits_elsewhere.update(targets)
                continue
            reason = (ConsentReason.PERMITTED if not deny else
                      ConsentReason.DENIED if effect.deny else read.withdrawn)
            assert reason is not None
            rank = (read.given, deny)
            for code in targets:
                if code not in decided or decided[code][0] < rank:
                    decided[code] = (rank, reason)
    reasons = [decided[code][1] if code in decided else None for code in policy.required_codes]
    counts = {"consents": seen, "malformed": malformed}
    for reason in reasons:
        if reason is not None and reason is not ConsentReason.PERMITTED:
            return ConsentDecision(ConsentOutcome.DENIED, reason, **counts)
    if malformed:
        return ConsentDecision(ConsentOutcome.MALFORMED, ConsentReason.MALFORMED, **counts)
    if all(reason is ConsentReason.PERMITTED for reason in reasons):
        return ConsentDecision(ConsentOutcome.PERMITTED, ConsentReason.PERMITTED, **counts)
    if not reads:
        return ConsentDecision(ConsentOutcome.NO_CONSENT, ConsentReason.NOT_IN_FORCE, **counts)
    missing = {code for code, reason in zip(policy.required_codes, reasons, strict=True)
               if reason is None}
    why = ConsentReason.OUTSIDE_PERIOD if missing & permits_elsewhere \
        else ConsentReason.NO_PROVISION
    return ConsentDecision(ConsentOutcome.NO_CONSENT, why, **counts)


def evaluate(consents: Iterable[Any], policy: ConsentPolicy, at: datetime
             ) -> ConsentEvaluation:
    """Decisions for every patient with at least one consent, and the unattributed count."""
    if at.tzinfo is None:
        raise ValueError("the evaluation time must be timezone-aware")
    reads: dict[str, list[_Read]] = {}
    seen: dict[str, int] = {}
    malformed: dict[str, int] = {}
    unattributed = 0
    for consent in consents:
        patient = consent.get("patient") if isinstance(consent, Mapping) else None
        key = patient_key(patient.get("reference")) if isinstance(patient, Mapping) else None
        if key is None:
            unattributed += 1
            continue
        assert isinstance(consent, Mapping)
        seen[key] = seen.get(key, 0) + 1
        reads.setdefault(key, [])
        try:
            read = _read(consent, policy, at)
        except _Malformed:
            malformed[key] = malformed.get(key, 0) + 1
            continue
        if read is not None:
            reads[key].append(read)
    decisions = {key: _decide(reads[key], seen[key], malformed.get(key, 0), policy)
                 for key in seen}
    return ConsentEvaluation(decisions, unattributed)


def evaluate_consents(consents: Iterable[Mapping[str, Any]], policy: ConsentPolicy,
                      at: datetime) -> dict[str, ConsentDecision]:
    """Per patient key, the decision of their consents at ``at`` (timezone-aware)."""
    return evaluate(consents, policy, at).decisions
