"""The set of patient keys a dataset version must not contain, and how many for each reason.

Three sources of exclusion, all read afresh for every run:

* **opt-out files** (:func:`~.policy.read_opt_out_file`);
* **opt-out lists** on the source FHIR server: ``GET [base]/List/<id>`` (each
  ``entry.item.reference``, entries marked ``deleted`` skipped; https://hl7.org/fhir/R4/list.html)
  or ``GET [base]/Group/<id>`` (each ``member.entity.reference``, ``inactive`` members
  skipped; https://hl7.org/fhir/R4/group.html);
* **Consent resources**, read with one paged search
  ``Consent?status=active,inactive,rejected`` through
  :class:`~dic_connector.sources.fhir_rest.FhirRestSource` (so paging, retries,
  authentication and the lost-page check are the source's) and decided by
  :mod:`.decisions`. Draft, proposed and entered-in-error consents are not in force and are
  not fetched.

Under opt-out a patient is excluded when their consents deny (or withdraw, or reject) a
required code, or cannot be read. Under opt-in every key of ``patient_keys`` (the assembled
cohort, which the caller must pass) is excluded unless its consents permit every required
code at ``at``; under opt-out the caller may pass None. A key is counted once, under the
first reason of :data:`REASONS` that applies; with ``patient_keys`` given, keys and counts
are those of the cohort only.

Nothing is ever widened by a failure: an unreadable file, an unreachable or wrong List/Group
and a failed Consent search raise :class:`~dic_connector.errors.SourceError`, and the run
uploads nothing. Messages and counts name files, references of the configuration and
reasons, never a patient.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dic_connector.connector.consent.decisions import (
    ConsentOutcome,
    ConsentReason,
    evaluate,
    patient_key,
)
from dic_connector.connector.consent.policy import ConsentMode, ConsentPolicy, read_opt_out_file
from dic_connector.errors import ConfigError, PipelineError, SourceError
from dic_connector.sources.fhir_rest import FhirRestConfig, FhirRestSource, SearchSpec
from dic_connector.sources.http import HttpClient, where

#: Reasons of exclusion, in the order a key is counted under the first that applies.
REASONS = ("opt_out_file", "opt_out_list", "consent_denied", "consent_withdrawn",
           "consent_rejected", "consent_malformed", "consent_expired", "consent_missing")
#: The statuses searched for: those that can permit or deny.
CONSENT_STATUSES = "active,inactive,rejected"

_BY_REASON = {
    ConsentReason.DENIED: "consent_denied", ConsentReason.WITHDRAWN: "consent_withdrawn",
    ConsentReason.REJECTED: "consent_rejected", ConsentReason.MALFORMED: "consent_malformed",
    ConsentReason.OUTSIDE_PERIOD: "consent_expired",
}


@dataclass(frozen=True)
class Exclusions:
    """Patient keys to drop, counts by reason (:data:`REASONS`), and counted problems
    (``consent_unattributed``, ``list_entry_not_patient``); counts are safe to log."""

    keys: frozenset[str]
    counts: Mapping[str, int]
    problems: Mapping[str, int] = field(default_factory=dict)


async def read_opt_out_list(client: HttpClient, reference: str) -> tuple[set[str], int]:
    """Patient keys of a ``List/<id>`` or ``Group/<id>``, and entries that are not Patients."""
    kind = reference.split("/", 1)[0]
    url = f"{client.base_url}/{reference}"
    _, doc = await client.request("GET", url, want_json=True)
    if not isinstance(doc, dict) or doc.get("resourceType") != kind:
        raise SourceError(f"{where('GET', url)}: answer is not a {kind}")
    if kind == "List":
        items = [e.get("item") for e in doc.get("entry") or []
                 if isinstance(e, dict) and e.get("deleted") is not True]
    else:
        items = [m.get("entity") for m in doc.get("member") or []
                 if isinstance(m, dict) and m.get("inactive") is not True]
    keys = {patient_key(item.get("reference")) if isinstance(item, dict) else None
            for item in items}
    others = sum(1 for item in items if not isinstance(item, dict)
                 or patient_key(item.get("reference")) is None)
    return {key for key in keys if key is not None}, others


async def read_consents(client: HttpClient, page_size: int = 500) -> list[dict[str, Any]]:
    """Every Consent that can permit or deny, from one paged search."""
    config = FhirRestConfig(client.base_url, (SearchSpec(
        "Consent", (("status", CONSENT_STATUSES),)),), page_size=page_size)
    async with FhirRestSource(config, client=client) as source:
        return [r async for r in source.stream() if r.get("resourceType") == "Consent"]


async def exclusions(policy: ConsentPolicy, *, client: HttpClient | None, at: datetime,
                     patient_keys: Collection[str] | None = None) -> Exclusions:
    """The keys to exclude from the next version under ``policy``, evaluated at ``at``.

    ``client`` is the source's FHIR server (None for a source without one: then a policy
    that reads the server is a :class:`~dic_connector.errors.ConfigError`). Under opt-in
    ``patient_keys`` is required.
    """
    if policy.needs_server and client is None:
        needs = [f"consent mode '{policy.mode}'"] if policy.mode is not ConsentMode.NONE \
            else []
        needs += [f"opt_out_lists ({len(policy.opt_out_lists)})"] if policy.opt_out_lists \
            else []
        raise ConfigError(f"The consent policy's {' and '.join(needs)} read(s) FHIR "
                          "resources, but the dataset's source has no FHIR server. Expected "
                          "mode none and only opt_out_files for such a source.")
    if policy.mode is ConsentMode.OPT_IN and patient_keys is None:
        raise PipelineError("Consent mode 'opt-in' needs the cohort's patient keys: every "
                            "key without a permitting consent is excluded.")
    reason_of: dict[str, str] = {}
    problems: dict[str, int] = {}

    def mark(key: str, reason: str) -> None:
        current = reason_of.get(key)
        if current is None or REASONS.index(reason) < REASONS.index(current):
            reason_of[key] = reason

    for path in policy.opt_out_files:
        for key in read_opt_out_file(path):
            mark(key, "opt_out_file")
    for reference in policy.opt_out_lists:
        assert client is not None
        keys, others = await read_opt_out_list(client, reference)
        for key in keys:
            mark(key, "opt_out_list")
        if others:
            problems["list_entry_not_patient"] = problems.get("list_entry_not_patient",
                                                              0) + others
    if policy.mode is not ConsentMode.NONE:
        assert client is not None
        evaluation = evaluate(await read_consents(client), policy, at)
        if evaluation.unattributed:
            problems["consent_unattributed"] = evaluation.unattributed
        for key, decision in evaluation.decisions.items():
            if decision.outcome in (ConsentOutcome.DENIED, ConsentOutcome.MALFORMED):
                mark(key, _BY_REASON[decision.reason])
            elif policy.mode is ConsentMode.OPT_IN and not decision.permits:
                mark(key, _BY_REASON.get(decision.reason, "consent_missing"))
        if policy.mode is ConsentMode.OPT_IN:
            assert patient_keys is not None
            for key in patient_keys:
                if key not in evaluation.decisions:
                    mark(key, "consent_missing")
    if patient_keys is not None:
        cohort = set(patient_keys)
        reason_of = {key: reason for key, reason in reason_of.items() if key in cohort}
    counts = {reason: 0 for reason in REASONS}
    for reason in reason_of.values():
        counts[reason] += 1
    return Exclusions(frozenset(reason_of), {r: n for r, n in counts.items() if n}, problems)
